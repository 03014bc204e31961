"""The outer loop: restem.py, SEAL's ReST-EM driver over any `domains.base.Domain`."""
