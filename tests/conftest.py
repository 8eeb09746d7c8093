"""Make the checkout importable as ansible_collections.keyops.runbooks for every test."""

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "keyops", "runbooks")

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
os.environ.setdefault("ANSIBLE_CONFIG", os.path.join(ROOT, "ansible.cfg"))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
# Playbook runs in tests keep their audit trail out of the operator's home folder.
os.environ.setdefault("KEYOPS_AUDIT_PATH", os.path.join(tempfile.mkdtemp(prefix="keyops-test-audit-"), "audit.jsonl"))
