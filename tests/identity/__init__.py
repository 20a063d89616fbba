"""Tests of proxy.identity (a package, so its helpers are imported relatively)."""
