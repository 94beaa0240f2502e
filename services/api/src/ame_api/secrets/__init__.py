"""The server's secret store: values encrypted at rest (AES-GCM), Vault (KV v2), resolution for launchers."""
