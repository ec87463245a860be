"""Locations by URI: which schemes :mod:`pipeline.storage` opens, and the one-line error that
says what to fix when object storage refuses or does not answer."""

from __future__ import annotations

from pathlib import Path

from pipeline.types import GnomonError

__all__ = ["SCHEMES", "one_line", "remote_error", "split_uri"]

SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs")
"""URI schemes a location may use (what ``pyarrow.fs.FileSystem.from_uri`` opens)."""


def split_uri(location: str | Path) -> tuple[str, str]:
    """``(scheme, rest)`` of a location; a plain path has scheme ``""``. An unknown scheme
    is refused in one line that names the supported ones."""
    text = str(location)
    if "://" not in text:
        return "", text
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in SCHEMES:
        raise GnomonError(f"{text!r}: unknown storage scheme {scheme + '://'!r}; use a local path or one of "
                          + ", ".join(s + "://" for s in SCHEMES))
    return scheme.lower(), rest


def one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def remote_error(uri: str, e: BaseException) -> GnomonError:
    """What to fix, in one line, for a failed request to object storage."""
    text = one_line(e)
    if "NETWORK_CONNECTION" in text or "connect" in text.lower():
        fix = "is the endpoint up? set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) to the S3 server's URL"
    elif "NO_SUCH_BUCKET" in text or "does not exist" in text:
        fix = "the bucket does not exist: create it or fix the URI"
    elif "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text \
            or "403" in text:
        fix = "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    else:
        fix = "check the URI, AWS_ENDPOINT_URL and the AWS credentials"
    return GnomonError(f"object storage {uri}: {fix} ({text})")
