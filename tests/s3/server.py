"""An S3-compatible server for Cascade's tests: moto's standalone server (PyPI `moto[server]`,
pinned in tests/s3/run.sh), a separate process on loopback that Cascade reaches over HTTP with
signed requests like any S3 endpoint.

Authentication is on: after the three unauthenticated IAM calls below make a user with an access
key, every request must be signed with that key (a wrong key id or secret is refused), as on a
real store. Buckets made: `cascade-test` with a CORS rule allowing GET/HEAD from any origin, and
`cascade-nocors` without one.

Prints one JSON line (endpoint, region, key id, secret) when ready, then serves until its stdin
closes (the process that started it ended) or it is terminated.
"""

import hmac
import json
import logging
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

# Read by moto at import: the IAM calls below are the only unauthenticated ones.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"

from urllib.parse import urlparse  # noqa: E402

import boto3  # noqa: E402
from botocore.auth import S3SigV4QueryAuth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from moto.core import authorization  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

# moto checks a signature against the request's URL as Werkzeug rebuilds it, which decodes the
# query (`prefix=a%2Fb` becomes `prefix=a/b`), so every signed ListObjectsV2 with a prefix
# (Cascade's and boto3's alike) failed with SignatureDoesNotMatch. The check is given the query
# as it was sent.
_authenticate = authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action


# Set on a request whose presigned URL `Presigned` verified: moto's own check (which reads only the
# Authorization header, and failed with a KeyError on every presigned URL) is skipped for it.
PRESIGNED_OK = "cascade.presigned_ok"


def _authenticate_raw_query(self, iam_request_cls, resource="*"):
    environ = getattr(getattr(self, "request", None), "environ", None) or {}
    if environ.get(PRESIGNED_OK):
        return None
    raw = environ.get("QUERY_STRING")
    if raw:
        self.uri = urlparse(self.uri)._replace(query=raw).geturl()
    return _authenticate(self, iam_request_cls, resource)


authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _authenticate_raw_query

REGION = "us-east-1"


class Presigned:
    """Checks presigned URLs (query-string SigV4) as S3 does: the signature recomputed with the
    user's secret by botocore over the same request, the key id, and the expiry. A valid one is
    served without an Authorization header; any other is refused with 403."""

    def __init__(self, app):
        self.app = app
        self.key = None

    def deny(self, start_response, code):
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code></Error>'.encode()
        start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]

    def __call__(self, environ, start_response):
        raw = environ.get("QUERY_STRING", "")
        q = parse_qs(raw, keep_blank_values=True)
        if "HTTP_AUTHORIZATION" in environ:
            return self.app(environ, start_response)
        if "X-Amz-Signature" not in q:
            # Unsigned, or signed in a way not checked here (SigV2's `Signature=`): refused.
            if "Signature" in q:
                return self.deny(start_response, "AccessDenied")
            return self.app(environ, start_response)
        if self.key is None:
            return self.deny(start_response, "AccessDenied")
        try:
            key_id, _, region, service, _ = q["X-Amz-Credential"][0].split("/")
            amz_date, expires = q["X-Amz-Date"][0], int(q["X-Amz-Expires"][0])
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except (KeyError, ValueError):
            return self.deny(start_response, "AuthorizationQueryParametersError")
        if key_id != self.key["AccessKeyId"]:
            return self.deny(start_response, "InvalidAccessKeyId")
        if datetime.now(timezone.utc) > signed_at + timedelta(seconds=expires):
            return self.deny(start_response, "AccessDenied")
        # The request as signed: every parameter but the signature. The signature is computed
        # from its parts, as moto checks header signatures (botocore's add_auth would sign with
        # the current time instead of the request's X-Amz-Date).
        signed = "&".join(p for p in raw.split("&") if p and p.split("=", 1)[0] != "X-Amz-Signature")
        path = urlsplit(environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]).path
        req = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{environ['HTTP_HOST']}{path}?{signed}", headers={"host": environ["HTTP_HOST"]})
        req.context["timestamp"] = amz_date
        auth = S3SigV4QueryAuth(Credentials(key_id, self.key["SecretAccessKey"]), service, region, expires=expires)
        expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        if not hmac.compare_digest(expected, q["X-Amz-Signature"][0]):
            return self.deny(start_response, "SignatureDoesNotMatch")
        environ[PRESIGNED_OK] = True
        return self.app(environ, start_response)


def main():
    # One line per request on stderr would drown a test's output; failures still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    presigned = Presigned(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, presigned, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    endpoint = f"http://{host}:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="cascade")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="cascade", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="cascade")["AccessKey"]
    presigned.key = key
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    s3.create_bucket(Bucket="cascade-test")
    rule = {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"], "ExposeHeaders": ["Content-Length", "Content-Range"]}
    s3.put_bucket_cors(Bucket="cascade-test", CORSConfiguration={"CORSRules": [rule]})
    s3.create_bucket(Bucket="cascade-nocors")
    print(json.dumps({"endpoint": endpoint, "region": REGION, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}), flush=True)
    # Until the starter goes away.
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
