"""Encryption at rest with region-held keys: what the storage provider holds is ciphertext.

An object written through the proxy into a dataset that requires encryption
is sealed with a fresh data key in a segmented, authenticated format
(`proxy.crypto.segments`); the data key is wrapped by the key service of the
proxy's own region (`proxy.crypto.keyservice`: OpenBao/Vault Transit, a
PKCS#11 HSM, or a local key file for development) and travels with the
object, so only a proxy of that region, allowed by its policy, can open it.
"""
