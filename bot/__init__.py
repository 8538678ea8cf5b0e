"""Relay: chat-ops flows for Slack that survive restarts, crashes and outages."""

__version__ = "0.1.0"
