"""What each trainer's data loader expects, as data: record layouts, roles, image fields, where `<image>`
must stand, box conventions, file formats, and how bad each kind of problem is for it.

Read from the loaders themselves: LLaVA `llava/train/train.py` (LazySupervisedDataset, preprocess_multimodal,
preprocess_v1) and `llava_arch.py`; LLaVA-NeXT the same files of LLaVA-VL/LLaVA-NeXT (lists of images,
retry-then-next-sample on a failed load, IndexError falling back to the previous image's features);
LLaMA-Factory `data/converter.py` (SharegptDatasetConverter), `data/processor/supervised.py` and
`mm_plugin.py` (`_validate_messages`); ms-swift `dataset/preprocessor/core.py` (MessagesPreprocessor) and
`template/base.py` (`_add_default_tags`, `_swift_prepare_inputs`, `_get_std_messages`).

Severity: `blocking` — the trainer stops with an error, drops the sample, or trains it against the wrong
image, role or mask; `warning` — the trainer repairs or tolerates it (moves or adds an `<image>` token,
skips a leading answer, merges turns, truncates) and the run goes on with a sample unlike the file.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCKING, WARNING = "blocking", "warning"
B, W = BLOCKING, WARNING

# every problem kind, in the order reports list them
KINDS = ("file_format", "not_a_record", "layout", "bad_turn", "bad_role", "first_turn", "alternation", "last_turn",
         "empty_value", "image_field", "image_token_count", "image_untagged", "image_position", "image_outside_root",
         "image_missing", "image_undecodable", "too_long", "box_convention", "box_mixed")

SHAREGPT, MESSAGES = ("from", "value"), ("role", "content")
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}
SWIFT_ROLES = {**dict.fromkeys(("user", "human", "tool", "tool_response", "observation", "observations",
                                "function_response"), "user"),
               **dict.fromkeys(("assistant", "gpt", "bot", "tool_call", "function_call"), "assistant"),
               "system": "system"}
# LLaMA-Factory's sharegpt tags: its defaults for from/value, the mllm_demo entry's for role/content
FACTORY_ROLES = {SHAREGPT: {"human": "user", "observation": "user", "gpt": "assistant", "function_call": "assistant",
                            "system": "system"},
                 MESSAGES: {"user": "user", "observation": "user", "assistant": "assistant",
                            "function_call": "assistant", "system": "system"}}


@dataclass(frozen=True)
class Target:
    """One trainer's loader rules."""

    name: str
    trainer: str                                  # what reads the file, for messages
    containers: tuple[str, ...]                   # keys holding the turns, in order of preference
    key_pairs: tuple[tuple[str, str], ...]        # (role key, text key) layouts of a turn
    roles: dict[tuple[str, str], dict[str, str]]  # per key pair: role as written -> user/assistant/system
    image_keys: tuple[str, ...]                   # keys holding the images, in order of preference
    multi_image: bool                             # a list of images is read
    no_image_values: bool                         # `null` / `[]` read as "no image" (else the load fails)
    one_layout_per_file: bool                     # the layout is declared once for the whole file
    collapse_per_turn: bool                       # several `<image>` in one turn become one (LLaVA)
    untagged_max: int | None                      # most images the loader accepts with no `<image>` at all
    token_at_start: bool                          # one image: `<image>` expected at the first human turn's start
    image_tokens: int                             # default tokens per image for --max-tokens (0: model-dependent)
    boxes: frozenset[str] | None                  # box conventions the model is trained on; None: model-dependent
    padded_boxes: bool                            # [0,1] boxes in the square-padded frame (LLaVA-1.5)
    formats: dict[str, str | None]                # input kind (json, jsonl, parquet) -> severity, None = fine
    severity: dict[str, str]                      # kind -> blocking / warning; kinds absent do not apply
                                                  # (file_format: see `formats`)
    why: dict[str, str]                           # kind -> what the trainer does with it, in its own terms

    def applies(self, kind: str) -> bool:
        """True when this trainer can meet `kind` at all."""
        if kind == "file_format":
            return any(self.formats.values())
        return kind in self.severity

    def severity_of(self, kind: str, input_kind: str = "json") -> str:
        """How bad `kind` is for this trainer (`file_format` depends on the kind of input)."""
        if kind == "file_format":
            return self.formats[input_kind] or WARNING
        return self.severity[kind]


_LLAVA_WHY = {
    "not_a_record": "preprocess indexes the row as a dict and fails",
    "layout": "LazySupervisedDataset reads `conversations` with `from`/`value`",
    "bad_turn": "preprocess_multimodal reads `value` as a string",
    "bad_role": "preprocess_v1 maps `from` through {human, gpt}: any other role is a KeyError",
    "first_turn": "preprocess_v1 silently skips a first turn that is not from human",
    "alternation": "preprocess_v1 asserts human/gpt alternation and stops the run",
    "last_turn": "a trailing human turn breaks preprocess_v1's target masking: the whole sample is masked",
    "empty_value": "an empty value changes the prompt separators: 'tokenization mismatch', the sample is masked",
    "image_field": "`image` must be one path string (os.path.join); a list, null or [] stops the run",
    "image_token_count": "each turn holding `<image>` takes the next image's features: more tokens than images "
                         "read another sample's image or fail",
    "image_untagged": "with no `<image>` token the image's features are dropped: the sample trains as text only",
    "image_position": "preprocess_multimodal moves `<image>` to the start of its turn (several in one turn become one)",
    "image_outside_root": "the path leaves --image-root (absolute, '..', or a link out); not read",
    "image_missing": "Image.open raises and stops the run",
    "image_undecodable": "Image.open raises and stops the run",
    "too_long": "cut at model_max_length: the end of the conversation is not trained",
    "box_convention": "LLaVA-1.5 trains on [0,1] boxes in the square-padded (expand2square) frame",
    "box_mixed": "one model is taught several box conventions at once",
    "file_format": "LazySupervisedDataset does json.load(data_path): one JSON list",
}

_NEXT_WHY = {
    **_LLAVA_WHY,
    "layout": "LazySupervisedDataset reads `conversations` with `from`/`value` (lengths use conv['value'])",
    "bad_role": "the vicuna/llama templates map `from` through {human, gpt} (KeyError); qwen trains an "
                "unknown role as the answer",
    "first_turn": "preprocess skips a first turn that is not from human",
    "alternation": "the vicuna/llama templates assert human/gpt alternation",
    "last_turn": "a trailing human turn has no answer; with the vicuna template the whole sample is masked",
    "empty_value": "an empty value breaks the template's masking; empty conversations fail modality_lengths' assert",
    "image_field": "`image` must be a path or a list of paths; null or [] fails in process_image",
    "image_token_count": "tokens and images are paired in order across the batch: a mismatch feeds the next "
                         "sample's image, or after an IndexError the previous one, without an error",
    "image_untagged": "one image with no `<image>`: its features are dropped, the sample trains as text only",
    "image_position": "preprocess_multimodal moves a lone `<image>` to the start of its turn",
    "image_missing": "process_image raises; __getitem__ retries, then trains the NEXT sample in its place",
    "image_undecodable": "process_image raises; __getitem__ retries, then trains the NEXT sample in its place",
    "too_long": "cut at tokenizer_model_max_length after the image features are inserted",
    "box_convention": "LLaVA-NeXT's data (the LLaVA-1.5 mix) uses [0,1] boxes",
    "file_format": "a .json data_path is json.load-ed; .jsonl is read only through a YAML data_path; "
                   "there is no parquet reader",
}

_FACTORY_WHY = {
    "not_a_record": "datasets cannot build a row from it",
    "layout": "dataset_info.json declares one `messages` column and one role/content tag pair per dataset",
    "bad_turn": "the converter reads the role and content tags as strings",
    "bad_role": "a role outside the dataset's tags is 'Invalid role tag': the example is skipped",
    "first_turn": "the first turn after system must be a user tag: 'Invalid role tag', the example is skipped",
    "alternation": "user tags at odd positions, assistant tags at even: 'Invalid role tag', the example is skipped",
    "last_turn": "an odd number of turns is 'Invalid message count': the example is skipped",
    "empty_value": "trained as an empty turn",
    "image_field": "the images column holds a path or a list of paths",
    "image_token_count": "mm_plugin._validate_messages raises 'The number of images does not match the number "
                         "of <image> tokens' and stops the run",
    "image_outside_root": "the path leaves --image-root (absolute, '..', or a link out); not read",
    "image_missing": "'Media ... does not exist in media_dir. Use original path.', then the image load fails",
    "image_undecodable": "the image load fails and stops the run",
    "too_long": "cut at cutoff_len (infer_seqlen): the end of the conversation is not trained",
    "box_mixed": "one model is taught several box conventions at once",
}

_SWIFT_WHY = {
    "not_a_record": "the preprocessor cannot read the row",
    "layout": "MessagesPreprocessor reads `messages`/`conversations` with role/content or from/value",
    "bad_turn": "_check_messages asserts every content is set; the template reads strings",
    "bad_role": "roles are user/assistant/system/tool*; a system turn only first (encode asserts user/assistant)",
    "first_turn": "_get_std_messages inserts an empty user turn before a leading assistant turn",
    "alternation": "_swift_prepare_inputs merges consecutive same-role turns with no separator",
    "last_turn": "the trailing user turn becomes a generation prompt with nothing to learn",
    "empty_value": "trained as an empty turn",
    "image_field": "`images` holds a path or a list of paths (or {bytes, path})",
    "image_token_count": "_add_default_tags: missing tags are added at the start of the first message (images "
                         "paired in order) and extra tags are left unreplaced",
    "image_untagged": "_add_default_tags adds the `<image>` tags at the start of the first message",
    "image_outside_root": "the path leaves --image-root (absolute, '..', or a link out); not read",
    "image_missing": "the image load fails: the row is skipped (or the run stops with --strict)",
    "image_undecodable": "the image load fails: the row is skipped (or the run stops with --strict)",
    "too_long": "truncation_strategy defaults to 'delete': rows over max_length are dropped",
    "box_mixed": "one model is taught several box conventions at once",
}


_ALWAYS = {"not_a_record": B, "layout": B, "bad_turn": B, "bad_role": B, "image_field": B, "image_token_count": B,
           "image_outside_root": B, "image_missing": B, "image_undecodable": B, "box_mixed": W}

TARGETS: dict[str, Target] = {
    "llava": Target(
        "llava", "LLaVA (haotian-liu/LLaVA)", ("conversations",), (SHAREGPT,), {SHAREGPT: LLAVA_ROLES},
        ("image",), multi_image=False, no_image_values=False, one_layout_per_file=False, collapse_per_turn=True,
        untagged_max=1, token_at_start=True, image_tokens=576, boxes=frozenset({"norm1"}), padded_boxes=True,
        formats={"json": None, "jsonl": B, "parquet": B},
        severity={**_ALWAYS, "first_turn": W, "alternation": B, "last_turn": B, "empty_value": B,
                  "image_untagged": W, "image_position": W, "too_long": W, "box_convention": W},
        why=_LLAVA_WHY),
    "llava-next": Target(
        "llava-next", "LLaVA-NeXT (LLaVA-VL/LLaVA-NeXT)", ("conversations",), (SHAREGPT,), {SHAREGPT: LLAVA_ROLES},
        ("image",), multi_image=True, no_image_values=False, one_layout_per_file=False, collapse_per_turn=False,
        untagged_max=1, token_at_start=True, image_tokens=2880, boxes=frozenset({"norm1"}), padded_boxes=False,
        formats={"json": None, "jsonl": W, "parquet": B},
        severity={**_ALWAYS, "first_turn": W, "alternation": B, "last_turn": B, "empty_value": B,
                  "image_untagged": W, "image_position": W, "too_long": W, "box_convention": W},
        why=_NEXT_WHY),
    "llama-factory": Target(
        "llama-factory", "LLaMA-Factory (hiyouga/LLaMA-Factory)", ("conversations", "messages"),
        (SHAREGPT, MESSAGES), FACTORY_ROLES, ("images", "image"), multi_image=True, no_image_values=True,
        one_layout_per_file=True, collapse_per_turn=False, untagged_max=0, token_at_start=False, image_tokens=0,
        boxes=None, padded_boxes=False, formats={"json": None, "jsonl": None, "parquet": None},
        severity={**_ALWAYS, "first_turn": B, "alternation": B, "last_turn": B, "empty_value": W, "too_long": W},
        why=_FACTORY_WHY),
    "ms-swift": Target(
        "ms-swift", "ms-swift (modelscope/ms-swift)", ("messages", "conversations", "conversation"),
        (MESSAGES, SHAREGPT), {MESSAGES: SWIFT_ROLES, SHAREGPT: SWIFT_ROLES}, ("images", "image"),
        multi_image=True, no_image_values=True, one_layout_per_file=False, collapse_per_turn=False,
        untagged_max=None, token_at_start=False, image_tokens=0, boxes=None, padded_boxes=False,
        formats={"json": None, "jsonl": None, "parquet": None},
        severity={**_ALWAYS, "first_turn": W, "alternation": W, "last_turn": W, "empty_value": W,
                  "image_untagged": W, "too_long": B},
        why=_SWIFT_WHY),
}
TARGET_NAMES = tuple(TARGETS)


def input_kind(suffix: str, is_dir: bool) -> str:
    """`json`, `jsonl` or `parquet` (a .parquet file or a folder of shards)."""
    return "parquet" if is_dir or suffix == ".parquet" else suffix.lstrip(".")
