//! The `spigot` command as a process, against moto and local targets:
//! one test binary, a module per command.

mod common;
mod helpers;
mod prelude;

mod agent;
mod archive;
mod dev;
mod dlq;
mod drain;
mod filters;
mod make_run;
mod reconcile;
mod relay;
mod resources;
mod secret;
mod send;
mod switch;
mod trigger;
