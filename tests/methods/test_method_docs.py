"""Each method's module docstring is its reference: it names every config field (so every knob and
every ASSUMPTION switch is documented with its default) and says which paper number each reported
metric stands beside ("Metrics"). A new field left out of the docstring fails here."""
from __future__ import annotations

import importlib

import pytest

from raypair.methods import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_docstring_names_every_field_and_the_metrics(name):
    cls = METHODS.get(name)
    doc = importlib.import_module(cls.__module__).__doc__ or ""
    missing = [f for f in cls.Config.model_fields if f != "name" and f"``{f}" not in doc]
    assert not missing, f"{cls.__module__}'s docstring never names {missing}"
    assert "Metrics" in doc and "val_acc" in doc, f"{cls.__module__}: no Metrics (which paper number val_acc is)"
    assert "ASSUMPTION" in doc, f"{cls.__module__}: no ASSUMPTION statement (or 'No ASSUMPTION ... applies')"
