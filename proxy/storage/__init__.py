"""What the storage APIs (S3, Azure Blob) read alike: request-targets, Host values, operation tables, listings.

`proxy.s3` and `proxy.azure` each know their own URL layout, names and error
format; the ground they stand on is here, once: the strict reading of a
request-target (`uri`, `target`), of object keys and blob names (`keys`), of
the Host header (`host`), the XML text of an error answer (`xmltext`) and
the headers that carry its code and reason (`refusal`), the
operation table (`operations`) and the filter that cuts an account listing
down to what the caller may see (`listing`). Nothing here imports either
API's package (`tests/storage/test_layering.py`).
"""
