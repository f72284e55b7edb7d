"""Tests of the mgdet command and the installed package."""
