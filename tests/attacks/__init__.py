"""The attack suite (issue 3): raw bytes against the real proxy, nothing may reach the storage server."""
