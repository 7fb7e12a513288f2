"""finpulse: financial-news risk signals from a stream of headlines.

Packages: :mod:`models` (classifier), :mod:`stream` (Kafka/Faust wiring), :mod:`alerts` (Redis
windows, detection rules, webhook delivery) and this one, which holds the settings, the command
line, the embedded development stack, the crawler, replay and backtests.
"""

__version__ = "0.1.0"
