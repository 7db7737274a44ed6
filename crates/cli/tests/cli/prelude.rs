//! What every module of the test binary uses.

pub(crate) use std::net::TcpStream;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Command, Output, Stdio};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use assert_cmd::prelude::*;
pub(crate) use serde_json::Value;
pub(crate) use spigot_core::ports::Switch;
pub(crate) use spigot_core::resources::Resource;
pub(crate) use spigot_core::signature::sign_sha256;
pub(crate) use spigot_core::trigger::{Receipt, Status};
pub(crate) use spigot_e2e::*;

pub(crate) use crate::common::*;
pub(crate) use crate::helpers::*;
