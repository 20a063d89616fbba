"""The attack suite: raw bytes against the real proxy, nothing may reach the storage server."""
