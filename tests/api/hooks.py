"""Schemathesis hooks for Cascade's description: tus chunks (`application/offset+octet-stream`)
are sent as raw bytes, like `application/octet-stream`; WHIP offers (`application/sdp`) as text."""
import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
schemathesis.serializer.alias("application/sdp", "text/plain")
