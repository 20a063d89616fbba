"""Which bucket the Host header names: path-style or virtual-hosted-style addressing.

S3 takes the bucket either from the first path segment (Host is the endpoint
itself) or from the Host (``<bucket>.<endpoint>``). The proxy must agree with
the storage server on which one applies, so it accepts only hosts it is
configured for (`S3Settings.endpoints`) and refuses everything else, including
headers that some servers and load balancers prefer over Host.

Storage servers differ on which names they serve virtual-hosted requests
under: moto reads ``B.localhost`` as bucket B but ``B.x.svc.cluster.local``
path-style, MinIO serves virtual-hosted requests only under its configured
domain, AWS S3 only under its own names. A request the proxy judged on the
Host's bucket but the storage server read from the path (or the reverse)
would touch another bucket than the one decided on. So a Host of the form
``<bucket>.<endpoint>`` is accepted only where the configuration says the
storage server reads it the same way (`S3Settings.virtual_hosts`), and then
only for a bucket name without dots, the one form every server splits alike
(moto takes the first label). In re-sign mode the proxy rewrites every
virtual-hosted request into path-style before signing it
(`proxy.s3.resign`), so it is accepted under any named endpoint: the storage
server then reads the bucket from a path the proxy wrote.

A `HostReader`, built once per configuration, remembers the Host values it
accepted (`proxy.storage.host.AcceptedHosts`); the headers beside Host
(repeated Host, ``X-Forwarded-Host``, ``Forwarded``) are checked on every
request.
"""

from __future__ import annotations

from proxy.config import AWS_DOMAIN, S3Settings
from proxy.errors import BadRequest
from proxy.s3.names import INVALID_BUCKET_NAME_CODE, bucket_name_problem
from proxy.storage.host import HOST_CACHE_SIZE, AcceptedHosts, Headers, HostRefusals, endpoint_sets, read_host, the_host

# Bucket names some servers do not read from the front of a Host (moto reads such a Host path-style).
_PATH_STYLE_PREFIXES = ("localhost", "localstack")
# moto reads a Host starting "host.docker.internal" path-style too: the bucket "host" under such an endpoint.
_DOCKER_HOST = "docker.internal"
_REFUSALS = HostRefusals(
    invalid="the Host header is not a valid host name",
    bad_port="the Host header has an invalid port",
    unknown="the Host header {host!r} is not a configured S3 endpoint",
    # AWS S3 is reached on its default port, and moto reads "s3.amazonaws.com:PORT" as a bucket's name.
    portless=AWS_DOMAIN,
    with_port="the Host header {host!r} names AWS S3 with a port: send it without the port",
)
# A Host as read: the bucket it names (None: path-style) and the endpoint part of it,
# port included, exactly as sent (the whole value for a path-style request).
HostReading = tuple[str | None, str]


def bucket_from_host(headers: Headers, settings: S3Settings) -> str | None:
    """The bucket a virtual-hosted-style Host names, or None for a path-style request.

    Raises `BadRequest` for a missing, repeated or malformed Host, a Host that
    is not a configured endpoint (or a valid bucket under one the storage
    server serves virtual-hosted requests under), and for ``X-Forwarded-Host``
    or ``Forwarded`` headers.
    """
    return HostReader(settings, cache_size=0).bucket(headers)


class HostReader:
    """`bucket_from_host` for one configuration, remembering the Host values it accepted."""

    def __init__(self, settings: S3Settings, *, cache_size: int = HOST_CACHE_SIZE) -> None:
        self._names, self._ips = endpoint_sets(settings.endpoints)
        self._virtual = frozenset(name.lower() for name in settings.virtual_hosts)
        # Re-sign mode forwards every request path-style (proxy.s3.resign), whatever the caller sent.
        self._rewritten = settings.sign is not None
        self._accepted = AcceptedHosts(self._read_host, cache_size)

    def bucket(self, headers: Headers) -> str | None:
        """As `bucket_from_host`: the bucket the Host names, or None. Raises `BadRequest`."""
        return self.read(headers)[0]

    def read(self, headers: Headers) -> HostReading:
        """The bucket the Host names (or None) and its endpoint part. Raises `BadRequest`."""
        return self._accepted(the_host(headers, "bucket"))

    def _read_host(self, original: str) -> HostReading:
        """What a Host value names under these endpoints. Raises `BadRequest`."""
        if original.isascii() and original.lower() != original:
            # Storage servers differ on case: moto reads "b.x.svc.cluster.LOCAL" (or "X.SVC.CLUSTER.LOCAL")
            # as the bucket "b" (or "X"), though it reads the same name in lower case path-style. Only the
            # one spelling every server reads alike is accepted.
            raise BadRequest(
                f"the Host header {original!r} must be written in lower case: storage servers differ on "
                "whether they compare host names without case, and could read another bucket from it"
            )
        name = read_host(original, self._names, self._ips, _REFUSALS)
        if name is None:
            return None, original
        # Leftmost dot first: the longest endpoint that is a suffix wins.
        dot = name.find(".")
        while dot != -1:
            endpoint = name[dot + 1 :]
            if endpoint in self._names:
                bucket = original[:dot]
                reason = bucket_name_problem(bucket)
                if reason:
                    raise BadRequest(f"{reason}: {bucket!r} (from the Host header)", code=INVALID_BUCKET_NAME_CODE,
                                     resource=bucket)
                if not self._rewritten:
                    _check_served(bucket, endpoint, self._virtual)
                return bucket, original[dot + 1 :]
            dot = name.find(".", dot + 1)
        raise _REFUSALS.refuse(_REFUSALS.unknown, original)


def _check_served(bucket: str, endpoint: str, virtual: frozenset[str]) -> None:
    """Refuse a virtual-hosted Host the storage server could read as naming another bucket."""
    if endpoint not in virtual:
        # moto, for one, reads B.<name>.svc.cluster.local path-style: the bucket would come from the path.
        raise BadRequest(
            f"virtual-hosted requests ({bucket}.{endpoint}) are not accepted under {endpoint!r}: the storage "
            f"server is not configured to read the bucket from that Host (s3.virtual_hosts), so it could take "
            f"it from the path instead. Address the bucket path-style: http://{endpoint}/{bucket}/KEY",
            resource=bucket,
        )
    if "." in bucket:
        # Servers split such a Host differently (moto takes the first label as the bucket).
        raise BadRequest(
            f"a bucket name with dots ({bucket!r}) is not accepted in the Host: storage servers split such a "
            f"Host differently. Address it path-style: http://{endpoint}/{bucket}/KEY",
            resource=bucket,
        )
    if bucket == "www" or bucket.startswith(_PATH_STYLE_PREFIXES) or (
            bucket == "host" and endpoint.startswith(_DOCKER_HOST)):
        # moto drops a leading "www." and reads the next label as the bucket, and reads a Host
        # that starts with "localhost", "localstack" or "host.docker.internal" path-style.
        raise BadRequest(
            f"the bucket {bucket!r} is not accepted in the Host (some servers read such a Host differently: "
            f"they drop a leading 'www.', or read a Host starting with 'localhost', 'localstack' or "
            f"'host.docker.internal' path-style); "
            f"address it path-style: http://{endpoint}/{bucket}/KEY",
            resource=bucket,
        )
