"""Azure Blob Storage behind the proxy's `StorageApi` seam (``upstream.api: azure``)."""
