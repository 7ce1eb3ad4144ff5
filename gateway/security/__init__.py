"""Broker security for a fleet: certificates, broker passwords and ACL, and secret files kept private.

``secrets`` (permission checks) is light and used by the config validator;
``certs`` needs the ``cryptography`` package; ``broker`` writes Mosquitto's files.
"""
