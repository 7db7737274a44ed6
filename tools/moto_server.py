"""moto's server, with SQS's FIFO order and message characters and, on request, AWS's IAM answers.

1. FIFO order. moto 5.2.1 reorders a FIFO message group after a consumer
   times out holding two or more of its messages (a drainer killed mid-batch):
   on the next receive it takes the head message out of its "in flight" set,
   still finds the group in flight because of the messages behind it, skips
   the head, and hands out the second message first. Real SQS hands the group
   out from its head. This wrapper drops every timed-out message from the
   in-flight set before a receive, which is SQS's behaviour (and long-polls
   itself, so that every pass of a long poll starts from a clean set).
   tests/tests/moto_fifo.rs shows the difference against plain moto.
   It also refuses message bodies with characters SQS refuses
   (InvalidMessageContents), which moto accepts.

   It keeps ReceiveRequestAttemptId (moto ignores it): a FIFO receive that
   repeats an attempt id within 5 minutes gets the answer of the first, as
   SQS does, so an SDK retrying a receive whose answer was lost gets the same
   messages. A queue tagged `spigot:lose-receive-answers` = N loses the
   answers of its next N receives that took messages (HTTP 500 after the
   messages were taken, a network fault on the way back).

2. IAM enforced (`--iam`, or SPIGOT_MOTO_IAM=1). Every request must carry the
   access key of an IAM user whose policies allow the action on the resource,
   as AWS decides it:
   * the access key `test` (secret `test`) belongs to the user `spigot-admin`,
     allowed everything: the credentials tests set a stack up and inspect it
     with (and what `spigot_aws::sdk_config` uses against an endpoint);
   * the resource is the one AWS authorises (the queue's ARN from QueueUrl,
     the stage's ARN from an API Gateway path, the secret's ARN, the stack's
     ARN), not moto's "*", and API Gateway's actions are HTTP methods
     (apigateway:GET, apigateway:PATCH), as in IAM;
   * conditions are evaluated against the request (s3:prefix of a listing,
     aws:PrincipalArn, s3:if-none-match / s3:if-match of a PutObject; the
     operators StringEquals/Like, ArnEquals/Like, Bool, Null); an Allow whose condition fails does not apply (moto
     reads it as a Deny);
   * S3 answers 403 AccessDenied, not 404 NoSuchKey, for an absent key to a
     principal that may not s3:ListBucket the bucket (evaluated with s3:prefix
     set to the key), and CopyObject needs s3:GetObject on its source;
   * S3 refuses (403) a request whose x-amz-expected-bucket-owner is not the
     bucket owner's account, as S3 does (moto ignores the header);
   * SigV4 signatures are not compared: moto miscomputes a query holding an
     encoded slash (ListObjectsV2 with prefix=filters/) and refuses even an
     admin key. The key lookup and the policy evaluation stay.

Usage: python tools/moto_server.py [--iam] -H 127.0.0.1 -p 5000 (moto.server's flags).
"""

import fnmatch
import json
import os
import sys
import time
from urllib.parse import parse_qs, unquote, urlparse

from moto.sqs.models import SQSBackend

ACCOUNT = "123456789012"
ADMIN_USER = "spigot-admin"
ADMIN_KEY = "test"

_receive = SQSBackend.receive_message


def receive_message(self, queue_name, count, wait_seconds_timeout, *args, **kwargs):
    # moto's long poll re-reads the in-flight set pass by pass: a group whose
    # messages time out a few milliseconds apart (a heartbeat extends them one
    # by one) has its head skipped while the rest is in flight, and its tail
    # handed out once the last one times out. So poll here, each pass from a
    # clean in-flight set.
    queue = self.get_queue(queue_name)
    deadline = time.time() + (wait_seconds_timeout or 0)
    while True:
        for message in list(queue.pending_messages):
            if message.visible:
                queue.pending_messages.discard(message)
        result = _receive(self, queue_name, count, 0, *args, **kwargs)
        left = deadline - time.time()
        if result or left <= 0:
            return result
        # Woken at once by a new message (moto's own condition), else after
        # 50 ms; visible messages of locked groups make that wait return at
        # once, so then pause 20 ms rather than spin.
        started = time.time()
        queue.wait_for_messages(min(0.05, left))
        if time.time() - started < 0.005:
            time.sleep(min(0.02, left))


SQSBackend.receive_message = receive_message


# ReceiveRequestAttemptId, and answers lost on the way back.
from moto.sqs.responses import SQSResponse

_receive_response = SQSResponse.receive_message
_ATTEMPT_WINDOW = 300
_attempts = {}
LOSE_TAG = "spigot:lose-receive-answers"


def receive_message_response(self):
    queue_name = self._get_queue_name()
    attempt = self._get_param("ReceiveRequestAttemptId")
    now = time.time()
    for k in [k for k, (at, _) in _attempts.items() if now - at > _ATTEMPT_WINDOW]:
        del _attempts[k]
    if attempt and (queue_name, attempt) in _attempts:
        answer = _attempts[(queue_name, attempt)][1]
    else:
        answer = _receive_response(self)
        if attempt:
            _attempts[(queue_name, attempt)] = (now, answer)
    queue = self.sqs_backend.get_queue(queue_name)
    lose = int(queue.tags.get(LOSE_TAG, "0") or 0)
    took = bool(getattr(answer, "result", None) or {}) and bool((answer.result or {}).get("Messages"))
    if lose > 0 and took:
        queue.tags[LOSE_TAG] = str(lose - 1)
        body = json.dumps({"__type": "com.amazonaws.sqs#InternalError", "message": "answer lost on the way back (spigot test fault)"})
        return body, {"status": 500, "Content-Type": "application/x-amz-json-1.0"}
    return answer


SQSResponse.receive_message = receive_message_response


# SQS refuses a message body holding a character outside #x9 | #xA | #xD |
# #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF (InvalidMessageContents);
# moto 5.2.1 accepts anything. (Batch sends go through send_message too.)
_send = SQSBackend.send_message


def _sqs_carries(text):
    return all(
        c in "\t\n\r"
        or "\u0020" <= c <= "\ud7ff"
        or "\ue000" <= c <= "\ufffd"
        or c >= "\U00010000"
        for c in text
    )


def send_message(self, queue_name, message_body, *args, **kwargs):
    if not _sqs_carries(message_body):
        from moto.sqs.exceptions import SQSException

        raise SQSException(
            "InvalidMessageContents", "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
        )
    return _send(self, queue_name, message_body, *args, **kwargs)


SQSBackend.send_message = send_message


# ---- IAM, as AWS decides it ------------------------------------------------


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _glob(pattern, value, case_sensitive=True):
    """IAM's wildcards: * any run, ? one character."""
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(operator, key_values, context):
    """One condition operator over its keys; unknown operators fail loudly."""
    negated = operator.startswith(("StringNot", "ArnNot"))
    base = operator.replace("Not", "", 1) if negated else operator
    if base.endswith("IfExists"):
        raise ValueError(f"condition operator {operator} is not emulated")
    for key, wanted in key_values.items():
        actual = context.get(key)
        wanted = [str(w) for w in _as_list(wanted)]
        if base == "Null":
            # Null: "true" holds when the key is absent, "false" when present.
            if (actual is None) != (wanted[0].lower() == "true"):
                return False
            continue
        if actual is None:
            hit = False
        elif base in ("StringEquals", "ArnEquals"):
            hit = actual in wanted
        elif base in ("StringLike", "ArnLike"):
            hit = any(_glob(w, actual) for w in wanted)
        elif base == "Bool":
            hit = actual.lower() in [w.lower() for w in wanted]
        else:
            raise ValueError(f"condition operator {operator} is not emulated")
        if hit == negated:
            return False
    return True


def statement_applies(statement, action, resource, context):
    if "Action" in statement:
        if not any(_glob(a, action, False) for a in _as_list(statement["Action"])):
            return False
    elif any(_glob(a, action, False) for a in _as_list(statement.get("NotAction"))):
        return False
    if "Resource" in statement:
        if not any(_glob(r, resource) for r in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_glob(r, resource) for r in _as_list(statement["NotResource"])):
            return False
    for operator, key_values in (statement.get("Condition") or {}).items():
        if not _condition_holds(operator, key_values, context):
            return False
    return True


def decide(documents, action, resource, context):
    """'deny' (explicit), 'allow', or None (implicit deny)."""
    allowed = False
    for document in documents:
        for statement in _as_list(document.get("Statement")):
            if statement_applies(statement, action, resource, context):
                if statement.get("Effect") == "Deny":
                    return "deny"
                allowed = True
    return "allow" if allowed else None


def _documents(access_key):
    from moto.iam.access_control import IAMPolicy

    return [IAMPolicy(p)._policy_json for p in access_key.collect_policies()]


def _request_json(request):
    try:
        return json.loads(request._body or b"{}")
    except ValueError:
        return {}


def _param(request, name):
    value = _request_json(request).get(name)
    if value is None:
        value = request._data.get(name)
    return value[0] if isinstance(value, list) else value


def _resource(request, resource):
    """The resource AWS authorises the request against (moto passes '*' for most)."""
    service, region = request._service, request._region
    if service == "sqs":
        url = _param(request, "QueueUrl")
        if url:
            name = urlparse(url).path.rstrip("/").split("/")[-1]
            return f"arn:aws:sqs:{region}:{ACCOUNT}:{name}"
    if service == "apigateway":
        path = urlparse(request._path).path
        if path.startswith("/v2/"):
            path = path[3:]
        return f"arn:aws:apigateway:{region}::{unquote(path)}"
    if service == "secretsmanager":
        secret = _param(request, "SecretId")
        if secret:
            from moto.secretsmanager.models import secretsmanager_backends

            try:
                return secretsmanager_backends[ACCOUNT][region].describe_secret(secret).arn
            except Exception:
                return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret}"
    if service == "firehose":
        stream = _param(request, "DeliveryStreamName")
        if stream:
            return f"arn:aws:firehose:{region}:{ACCOUNT}:deliverystream/{stream}"
    if service == "cloudformation":
        stack = _param(request, "StackName")
        if stack:
            if stack.startswith("arn:"):
                return stack
            from moto.cloudformation.models import cloudformation_backends

            for s in cloudformation_backends[ACCOUNT][region].stacks.values():
                if s.name == stack:
                    return s.stack_id
    return resource


def _action(request):
    if request._service == "apigateway":
        return f"apigateway:{request._method.upper()}"
    if request._service == "sqs" and request._action.endswith("Batch"):
        # SQS authorises a batch call by its single action's permission.
        return request._action[: -len("Batch")]
    return request._action


def _deny(request, action, resource):
    print(f"IAM denied {action} on {resource} to {request._access_key.arn}", file=sys.stderr, flush=True)
    request._raise_access_denied()


def check_action_permitted(self, resource):
    action = _action(self)
    if action == "sts:GetCallerIdentity":
        return
    resource = _resource(self, resource)
    documents = _documents(self._access_key)
    context = {"aws:PrincipalArn": self._access_key.arn}
    query = parse_qs(urlparse(self._path).query)
    if action == "s3:ListBucket" and "prefix" in query:
        context["s3:prefix"] = query["prefix"][0]
    if action == "s3:PutObject":
        # S3's conditional-write keys: present when the request carries the header.
        headers = {k.lower(): v for k, v in self._headers.items()}
        for header in ("if-none-match", "if-match"):
            if header in headers:
                context[f"s3:{header}"] = headers[header]
    if decide(documents, action, resource, context) != "allow":
        _deny(self, action, resource)
    if action == "s3:PutObject":
        source = {k.lower(): v for k, v in self._headers.items()}.get("x-amz-copy-source")
        if source:
            source = unquote(source.lstrip("/").split("?versionId=")[0])
            if decide(documents, "s3:GetObject", f"arn:aws:s3:::{source}", context) != "allow":
                _deny(self, "s3:GetObject", f"arn:aws:s3:::{source}")
    if action == "s3:GetObject":
        _refuse_absent_key_without_list(self, documents, resource, context)
    if self._service == "s3":
        # S3 refuses a request whose x-amz-expected-bucket-owner is not the bucket's owner.
        owner = {k.lower(): v for k, v in self._headers.items()}.get("x-amz-expected-bucket-owner")
        if owner is not None and owner != ACCOUNT:
            print(f"S3 expected bucket owner {owner} is not {ACCOUNT}: 403", file=sys.stderr, flush=True)
            self._raise_access_denied()


def _refuse_absent_key_without_list(request, documents, resource, context):
    """S3: an absent key is NoSuchKey only to a principal that may list the bucket."""
    from moto.s3.models import s3_backends

    bucket, _, key = resource[len("arn:aws:s3:::"):].partition("/")
    try:
        found = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
    except Exception:
        return
    if found is not None:
        return
    listing = dict(context, **{"s3:prefix": key})
    if decide(documents, "s3:ListBucket", f"arn:aws:s3:::{bucket}", listing) != "allow":
        print(f"S3 absent key {resource}: 403 to {request._access_key.arn} (no s3:ListBucket)", file=sys.stderr, flush=True)
        request._raise_access_denied()


def enforce_iam():
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequestBase
    from moto.iam.models import iam_backends

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    IAMRequestBase.check_signature = lambda self: None
    IAMRequestBase.check_action_permitted = check_action_permitted
    iam = iam_backends[ACCOUNT]["aws"]
    iam.create_user("us-east-1", ADMIN_USER)
    iam.put_user_policy(
        ADMIN_USER,
        "everything",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    key = iam.create_access_key(ADMIN_USER)
    key.access_key_id = ADMIN_KEY
    key.secret_access_key = ADMIN_KEY


def raise_firehose_quota():
    """moto refuses a 51st Firehose stream in a region (an old AWS quota);
    AWS's default is in the thousands. A test run makes a local stack, each
    with its archive stream, per test: moto's 50 would end the run."""
    from moto.firehose.models import DeliveryStream

    DeliveryStream.MAX_STREAMS_PER_REGION = 5000


if __name__ == "__main__":
    raise_firehose_quota()
    if "--iam" in sys.argv:
        sys.argv.remove("--iam")
        enforce_iam()
    elif os.environ.get("SPIGOT_MOTO_IAM") == "1":
        enforce_iam()
    from moto.server import main

    sys.exit(main())
