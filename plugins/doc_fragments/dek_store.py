# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  store:
    description:
      - Where the wrapped data keys live.
      - The store is streamed in batches and never loaded whole. Each batch is committed atomically as a
        compare-and-swap on the old ciphertext, together with a progress cursor, so a killed run resumes
        after the last committed batch and no data key is wrapped twice.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - V(sqlite) is a SQLite database file, V(jsonl) a file with one JSON object a line, V(url) a database URL.
        type: str
        choices: [sqlite, jsonl, url]
        default: sqlite
      path:
        description: The SQLite or JSON lines file. Required when O(store.type) is V(sqlite) or V(jsonl).
        type: path
      url:
        description: A database URL (C(sqlite:///relative/path) or C(sqlite:////absolute/path)).
        type: str
      table:
        description: The table that holds the data keys (SQL stores only).
        type: str
        default: data_keys
      id_column:
        description: The column (or JSON field) with each data key's unique id.
        type: str
        default: id
      key_ref_column:
        description: The column with the reference of the key that wraps the data key.
        type: str
        default: key_ref
      ciphertext_column:
        description: The column with the wrapped data key.
        type: str
        default: ciphertext
      context_column:
        description: The column with the key derivation context (base64), empty when none.
        type: str
        default: context
  partition_index:
    description:
      - Which slice of the store this run works on, from 0 to O(partition_count) - 1.
      - Slices are stable (a hash of each id), disjoint and together cover the whole store, so AWX job slicing
        can run one slice per execution node.
    type: int
    default: 0
  partition_count:
    description: How many slices the store is cut into.
    type: int
    default: 1
"""
