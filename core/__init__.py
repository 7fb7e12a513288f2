"""The base layer: settings, event time, message models and their schemas, the error root, Redis key layout.

It imports nothing else of finpulse; every other layer may import it (docs/architecture.md).
"""
