"""devtools/emulators.py: Google's emulators start on loopback, reset, and stop for good."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from google.cloud import firestore

from devtools import emulators
from devtools.emulators import FirestoreEmulator, PubSubEmulator

PROJECT = "demo-emulators-test"


def test_missing_names_the_packages_to_install(monkeypatch):
    monkeypatch.setenv("CLOUDSDK_ROOT_DIR", "/nonexistent-sdk")
    gaps = emulators.missing()
    assert "google-cloud-cli-firestore-emulator" in gaps
    assert "google-cloud-cli-pubsub-emulator" in gaps
    with pytest.raises(emulators.EmulatorMissing, match="apt-get install"):
        FirestoreEmulator(project=PROJECT).command()


def test_the_machine_has_both_emulators():
    assert emulators.missing() == []


def test_firestore_reset_deletes_every_document_and_stop_ends_the_jvm(monkeypatch):
    with FirestoreEmulator(project=PROJECT, rules=None) as emu:
        assert emu.host.startswith("127.0.0.1:")
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emu.host)
        db = firestore.Client(project=PROJECT)
        db.collection("users").document("u1").set({"a": 1})
        db.collection("users").document("u1").collection("sub").document("s").set({"b": 2})
        emu.reset()
        assert not db.collection("users").document("u1").get().exists
        assert list(db.collection_group("sub").stream()) == []
        proc = emu.proc
    assert proc is not None and proc.poll() is not None


def test_pubsub_reset_drops_topics_and_subscriptions():
    with PubSubEmulator() as emu:
        topic = emu.create_topic(PROJECT, "t-one")
        emu.create_push_subscription(PROJECT, "s-one", topic, "http://127.0.0.1:9/")

        def topics() -> list[str]:
            url = f"{emu.url}/v1/projects/{PROJECT}/topics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return [t["name"] for t in json.load(response).get("topics", [])]

        assert topics() == [topic]
        emu.reset()
        assert topics() == []
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{emu.url}/v1/projects/{PROJECT}/subscriptions/s-one")
        assert err.value.code == 404
