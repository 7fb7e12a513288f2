"""Ingestion: feeds, the crawler, de-duplication, history files, replay and the Kafka producer.

Imports :mod:`finpulse.core` only; knows no Faust and no detection rules.
"""
