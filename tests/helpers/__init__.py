"""Helpers shared by the test tiers: speech synthesis, fakes, process harnesses."""
