"""The model bundle: the folder `edge-gesture-export` writes and the daemon loads.

The manifest (`edge-gesture-model.json`) carries every fact the runtime needs so that the edge device
never imports torch, transformers or jinja: which file plays which role, how to preprocess the image
the way Idefics3's processor does (image splitting off), how to build the prompt, which token ids
matter, and a sha256 for every file. `load_bundle_manifest` refuses a bundle that would load wrong,
naming the file and the field.

Prompt contract: `prompt.template` is the model's chat template rendered once for one user turn
holding one image and one text, with `prompt.image_placeholder` and `prompt.question_placeholder`
where they go; `PromptSpec.render` swaps in `prompt.image_sequence` (the expansion of one image:
`<fake_token_around_image><global-img>` + `<image>` x image_tokens_per_image +
`<fake_token_around_image>`) and the question, and `tokenizer.json` encodes the result with
`prompt.add_special_tokens`.

Language-model contract, by profile:
- cpu/gpu, openvino: role `language` is optimum-intel's stateful model (inputs_embeds,
  attention_mask, position_ids, beam_idx -> logits; KV cache in the model's state).
- cpu/gpu, onnx: role `language` takes inputs_embeds, attention_mask, position_ids and
  `past_key_values.{i}.key|value` [batch, kv_heads, past, head_dim] and returns logits and
  `present.{i}.key|value` (past + new).
- npu (both formats), every shape static, one model for prefill and decode: role `language` takes
  a chunk of C = static_shapes.max_prompt_length tokens, right-padded: inputs_embeds [1, C, hidden],
  position_ids [1, C], `past_key_values.{i}.key|value` [1, kv_heads, K, head_dim] with
  K = static_shapes.kv_length (a fixed buffer; unused slots masked), attention_mask [1, K + C] (the
  K past slots, then the C chunk positions; 0 for unused slots and padding); it returns logits
  [1, C, vocab] and `present.{i}.key|value` [1, kv_heads, C, head_dim] for the chunk only, which
  the caller copies into its buffer for the real tokens. Prefill: the prompt in one chunk, past all
  masked; each decode step: the new token at chunk position 0, the rest padding. Chunk position j
  attends to unmasked past slots and to unmasked chunk positions <= j. text_embeddings takes
  input_ids [1, C] (pad to C). The vision model takes exactly [1, 3, size, size].
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

MANIFEST_NAME = "edge-gesture-model.json"
#: The manifest schema this code reads and writes. Bump it when a change would make an older
#: reader misread a bundle; older readers then refuse newer bundles by this number.
SCHEMA_VERSION = 1

Format = Literal["openvino", "onnx"]
WeightsPrecision = Literal["fp32", "fp16", "int8", "int4"]
ActivationsPrecision = Literal["fp32", "fp16", "int8"]
DeviceProfile = Literal["cpu", "gpu", "npu"]
Role = Literal["vision", "text_embeddings", "language"]
ROLES: tuple[Role, ...] = ("vision", "text_embeddings", "language")

_SHA256 = r"^[0-9a-f]{64}$"
Shape = list[int | str]


class BundleError(Exception):
    """A bundle that cannot be used; the message names the file and the field and says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenRef(_Strict):
    text: str = Field(description="The token as text, exactly as in tokenizer.json.")
    id: Annotated[int, Field(ge=0)] = Field(description="The token id.")


class SpecialTokens(_Strict):
    image: TokenRef = Field(
        description="`<image>`: one per image feature vector; its embeddings are replaced by the "
        "vision model's output, in order."
    )
    fake_token_around_image: TokenRef = Field(
        description="`<fake_token_around_image>`: opens and closes an image's token run."
    )
    global_image: TokenRef = Field(
        description="`<global-img>`: precedes the tokens of an unsplit (global) image."
    )
    end_of_utterance: TokenRef = Field(
        description="`<end_of_utterance>`: ends a chat turn; the model emits it when done."
    )
    eos_token_ids: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, description="Token ids that end generation (from generation_config)."
    )
    bos_token_id: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Beginning-of-sequence id, if the model has one."
    )
    pad_token_id: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Padding id, if the model has one."
    )


class ImageSpec(_Strict):
    size: Annotated[int, Field(ge=16, le=4096)] = Field(
        description="The square side in pixels the vision model takes (512 for SmolVLM)."
    )
    patch_size: Annotated[int, Field(ge=1)] = Field(
        description="Vision patch side in pixels; size / patch_size patches per side."
    )
    channel_order: Literal["RGB"] = Field("RGB", description="Channel order of pixel_values.")
    layout: Literal["NCHW"] = Field("NCHW", description="Layout of pixel_values.")
    pre_resize_longest_edge: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Idefics3's processor first resizes so the longest edge is this (aspect kept, "
        "odd short edge rounded up to even), then to size x size; None: one resize only. A runtime "
        "that must match the processor's pixels exactly does both; one resize is close.",
    )
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = Field(
        description="Resampling filter the processor uses when resizing (PIL's name)."
    )
    rescale_factor: Annotated[float, Field(gt=0)] = Field(
        description="Multiply uint8 pixel values by this first (1/255)."
    )
    mean: tuple[float, float, float] = Field(description="Per-channel mean subtracted next.")
    std: tuple[float, float, float] = Field(description="Per-channel std divided by last.")

    patch_position_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        description="Position ids of the (size/patch_size)^2 patches of one whole image, exactly "
        "as transformers computes them (not simply 0..n-1); feed them to a vision model that has "
        "a patch_position_ids input (OpenVINO bundles). None when the vision model computes them.",
    )

    @model_validator(mode="after")
    def _ids_per_patch(self) -> ImageSpec:
        n = (self.size // self.patch_size) ** 2
        if self.patch_position_ids is not None and len(self.patch_position_ids) != n:
            raise ValueError(
                f"patch_position_ids has {len(self.patch_position_ids)} ids; "
                f"({self.size}/{self.patch_size})^2 = {n} patches"
            )
        return self

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class PromptSpec(_Strict):
    template: str = Field(
        description="The chat template rendered for one user turn (image, then question) with the "
        "generation prompt; holds image_placeholder and question_placeholder once each."
    )
    image_placeholder: str = Field("{image}", min_length=1, description="Marks the image.")
    question_placeholder: str = Field("{question}", min_length=1, description="Marks the text.")
    image_sequence: str = Field(
        description="Text one image expands to (image splitting off), with the `<image>` token "
        "repeated image_tokens_per_image times."
    )
    add_special_tokens: bool = Field(
        description="Pass to tokenizers' `Tokenizer.encode` so ids match the processor's."
    )
    chat_template: str | None = Field(None, description="The source Jinja chat template, for reference only.")

    @model_validator(mode="after")
    def _placeholders_once(self) -> PromptSpec:
        for name in ("image_placeholder", "question_placeholder"):
            n = self.template.count(getattr(self, name))
            if n != 1:
                raise ValueError(f"template must hold {name} {getattr(self, name)!r} once, not {n}")
        return self

    def render(self, question: str) -> str:
        """The prompt text for one image and one question, ready for `tokenizer.json`."""
        # Image first: a question containing the image placeholder must stay literal.
        head, tail = self.template.split(self.question_placeholder)
        head = head.replace(self.image_placeholder, self.image_sequence)
        tail = tail.replace(self.image_placeholder, self.image_sequence)
        return head + question + tail


class StaticShapes(_Strict):
    batch: Literal[1] = Field(1, description="Batch size of every model.")
    max_prompt_length: Annotated[int, Field(ge=1)] = Field(
        description="Chunk length C of the static language model: prompts are right-padded to it."
    )
    kv_length: Annotated[int, Field(ge=1)] = Field(
        description="Slots K of the static KV buffer: prompt plus generated tokens must fit."
    )

    @model_validator(mode="after")
    def _kv_holds_prompt(self) -> StaticShapes:
        if self.kv_length <= self.max_prompt_length:
            raise ValueError("kv_length must be > max_prompt_length (the prompt plus an answer)")
        return self


class LanguageSpec(_Strict):
    vocab_size: Annotated[int, Field(ge=1)] = Field(description="Logits per position.")
    hidden_size: Annotated[int, Field(ge=1)] = Field(description="Embedding width.")
    num_layers: Annotated[int, Field(ge=1)] = Field(description="Decoder layers (KV pairs).")
    num_key_value_heads: Annotated[int, Field(ge=1)] = Field(description="KV heads per layer.")
    head_dim: Annotated[int, Field(ge=1)] = Field(description="Width of one attention head.")
    stateful: bool = Field(
        description="True: the KV cache lives in the model's state (OpenVINO, reset per prompt); "
        "false: it is passed in and out explicitly."
    )


class ModelPart(_Strict):
    file: str = Field(description="Model file relative to the bundle (.xml for OpenVINO, .onnx).")
    weights_precision: WeightsPrecision = Field(description="Precision of the stored weights.")
    activations_precision: ActivationsPrecision = Field(
        description="Precision activations are quantized to (int8 only with static quantization)."
    )
    inputs: dict[str, Shape] = Field(
        description="Input names with shapes; a string is a dynamic dimension's name."
    )
    outputs: dict[str, Shape] = Field(description="Output names with shapes, as for inputs.")


class FileEntry(_Strict):
    sha256: str = Field(pattern=_SHA256, description="Lower-case hex sha256 of the file.")
    size: Annotated[int, Field(ge=0)] = Field(description="Size in bytes.")


class SourceSpec(_Strict):
    model: str = Field(description="Hugging Face model id or the local directory exported from.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch), if any.")
    architecture: str = Field(description="Architecture class, e.g. Idefics3ForConditionalGeneration.")
    model_type: str = Field(description="config.json model_type (idefics3 or smolvlm).")


class ToolSpec(_Strict):
    name: str = Field(description="The program that wrote the bundle.")
    version: str = Field(description="Its version.")
    options: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="The export options used, to reproduce the bundle."
    )


class Verification(_Strict):
    reference: str = Field(description="What the bundle was compared with (PyTorch, fp32).")
    max_abs_logit_diff: float = Field(description="Largest |bundle - reference| over the logits.")
    tolerance: float | None = Field(
        description="Allowed max_abs_logit_diff (fp32/fp16 bundles); None when top-1 is the test."
    )
    steps: Annotated[int, Field(ge=1)] = Field(
        1, description="Positions compared: the prompt's last, then greedy decode steps."
    )
    top1_agree: bool = Field(description="Whether the arg-max token matched at every step.")
    top1_ties: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Steps where the tokens differed but PyTorch itself had them in a near-tie "
        "(closer than a stated fraction of its logit range), so neither pick is wrong.",
    )
    passed: bool = Field(description="Whether the bundle passed.")


class BundleManifest(_Strict):
    schema_version: int = Field(description="Manifest schema version; readers refuse newer ones.")
    format: Format = Field(description="Model file format.")
    weights_precision: WeightsPrecision = Field(
        description="Weight precision of the language model (the bulk of the bundle)."
    )
    activations_precision: ActivationsPrecision = Field(
        description="Lowest activation precision of any part (int8 with static vision quantization)."
    )
    device_profile: DeviceProfile = Field(
        description="Target device class; npu means every model shape is static."
    )
    static_shapes: StaticShapes | None = Field(
        None,
        description="Fixed language-model lengths; present exactly when device_profile is npu.",
    )
    image: ImageSpec = Field(description="How to turn a crop into pixel_values.")
    image_tokens_per_image: Annotated[int, Field(ge=1)] = Field(
        description="Image feature vectors (and `<image>` tokens) per image: 64 at 512x512."
    )
    tokens: SpecialTokens = Field(description="Special tokens the runtime uses.")
    prompt: PromptSpec = Field(description="Prompt building without Jinja.")
    tokenizer: str = Field("tokenizer.json", description="The tokenizers-library file.")
    language: LanguageSpec = Field(description="Language-model dimensions.")
    models: dict[Role, ModelPart] = Field(description="Model file by role.")
    files: dict[str, FileEntry] = Field(
        description="Every file of the bundle but the manifest, by relative POSIX path."
    )
    source: SourceSpec = Field(description="Where the weights came from.")
    tool: ToolSpec = Field(description="What wrote the bundle.")
    created: AwareDatetime = Field(description="When the bundle was written (with time zone).")
    verification: Verification | None = Field(None, description="The export's parity check against PyTorch.")

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"this reader knows schema {SCHEMA_VERSION} only")
        return v

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, v: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in v:
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts or name != p.as_posix() or name == MANIFEST_NAME:
                raise ValueError(f"{name!r} is not a plain relative path inside the bundle")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        static = self.device_profile == "npu"
        if static and self.static_shapes is None:
            raise ValueError("static_shapes is required when device_profile is npu")
        if not static and self.static_shapes is not None:
            raise ValueError("static_shapes is only for device_profile npu")
        if set(self.models) != set(ROLES):
            raise ValueError(f"models must have exactly the roles {', '.join(ROLES)}")
        if self.tokenizer not in self.files:
            raise ValueError(f"tokenizer {self.tokenizer!r} is not listed in files")
        for role, part in self.models.items():
            if part.file not in self.files:
                raise ValueError(f"models.{role}.file {part.file!r} is not listed in files")
            if self.format == "openvino":
                weights = part.file.rsplit(".", 1)[0] + ".bin"
                if not part.file.endswith(".xml") or weights not in self.files:
                    raise ValueError(f"models.{role}: OpenVINO needs an .xml and its .bin in files")
            elif not part.file.endswith(".onnx"):
                raise ValueError(f"models.{role}.file must be an .onnx file")
        n = self.prompt.image_sequence.count(self.tokens.image.text)
        if n != self.image_tokens_per_image:
            raise ValueError(
                f"prompt.image_sequence holds {self.tokens.image.text} {n} times, "
                f"image_tokens_per_image is {self.image_tokens_per_image}"
            )
        return self


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file under root except the manifest, by relative POSIX path."""
    out: dict[str, FileEntry] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST_NAME:
            out[rel] = FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
    return out


def write_bundle_manifest(root: Path, manifest: BundleManifest) -> Path:
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} problem(s)"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def _read_manifest_json(path: Path) -> dict:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{path}: no manifest; is {path.parent} a bundle written by edge-gesture-export?"
        ) from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: the manifest must be a JSON object")
    return data


def _check_schema_version(path: Path, data: dict) -> None:
    # Checked before the full validation: a newer manifest may have fields this reader does not
    # know, and "unknown field" would hide the real reason.
    v = data.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise BundleError(f"{path}: schema_version: missing or not an integer (got {v!r})")
    if v > SCHEMA_VERSION:
        tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
        raise BundleError(
            f"{path}: schema_version {v} is newer than this edge-gesture reads ({SCHEMA_VERSION}); "
            f"the bundle was written by {tool.get('name', 'an export tool')} "
            f"{tool.get('version', '(unknown version)')}: upgrade edge-gesture, or re-export with "
            f"an edge-gesture-export that writes schema {SCHEMA_VERSION}"
        )


def _check_files(root: Path, manifest: BundleManifest, checksums: bool) -> None:
    mpath = root / MANIFEST_NAME
    for name, entry in manifest.files.items():
        p = root / name
        if not p.is_file():
            raise BundleError(f"{p}: missing (listed in {mpath} files)")
        size = p.stat().st_size
        if size != entry.size:
            raise BundleError(
                f"{p}: size {size} bytes, manifest files.{name}.size says {entry.size}: "
                "the file is truncated or was replaced; re-export the bundle"
            )
        if checksums and sha256_file(p) != entry.sha256:
            raise BundleError(
                f"{p}: sha256 does not match manifest files.{name}.sha256: "
                "the file is corrupt or was replaced; re-export the bundle"
            )


def _check_no_links(root: Path) -> None:
    # The checksums vouch for a file's content at load time; a link's target can change after
    # that, or lie outside the bundle altogether. (The bundle folder itself may be a link.)
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(folder) / name
            if p.is_symlink():
                raise BundleError(
                    f"{p}: a symbolic link inside the bundle {root}; a bundle holds plain files "
                    "only: copy the file in place of the link, or re-export the bundle"
                )


def _check_onnx_external_data(root: Path, manifest: BundleManifest) -> None:
    """ONNX Runtime also reads the files a model names for its external data: each must be a
    file of the bundle, listed (and so checked) in the manifest."""
    from edge_gesture.onnx_external_data import OnnxFormatError, external_data_locations

    mpath = root / MANIFEST_NAME
    for role, part in manifest.models.items():
        model = root / part.file
        try:
            locations = external_data_locations(model)
        except (OnnxFormatError, OSError) as e:
            raise BundleError(f"{model}: not a readable ONNX model ({e}); re-export the bundle") from None
        for tensor, location in locations:
            rel = PurePosixPath(PurePosixPath(part.file).parent, location)
            if PurePosixPath(location).is_absolute() or ".." in rel.parts:
                raise BundleError(
                    f"{model}: tensor {tensor!r} reads its data from {location!r}, outside the "
                    "bundle; re-export the bundle"
                )
            name = rel.as_posix()
            if name not in manifest.files:
                raise BundleError(
                    f"{root / name}: models.{role} ({part.file}) reads tensor data from it, but "
                    f"it is not listed in {mpath} files, so it is not checked; re-export the bundle"
                )


def _check_verified(root: Path, manifest: BundleManifest) -> None:
    v = manifest.verification
    if v is None or v.passed:
        return
    raise BundleError(
        f"{root}: this bundle failed the export's check against PyTorch (verification.passed = "
        f"false in {MANIFEST_NAME}: largest logit difference {v.max_abs_logit_diff:.3g}, top-1 "
        f"{'agrees' if v.top1_agree else 'differs'}), so its answers may be wrong. Re-export it, "
        "or set vlm.allow_unverified = true (in the [vlm] section of config.toml) to load it anyway"
    )


def load_bundle_manifest(
    root: str | os.PathLike, *, checksums: bool = True, allow_unverified: bool = False
) -> BundleManifest:
    """Read and validate a bundle's manifest and check its files.

    checksums=False checks presence and sizes only (faster; for repeated loads of a bundle
    already verified). A bundle whose manifest records a failed verification is refused unless
    allow_unverified. Raises BundleError naming the file and field.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory (expected a model bundle folder)")
    path = root / MANIFEST_NAME
    data = _read_manifest_json(path)
    _check_no_links(root)  # after: a folder that is no bundle at all (a home folder) is not walked
    _check_schema_version(path, data)
    try:
        manifest = BundleManifest.model_validate(data)
    except ValidationError as err:
        raise BundleError(_format_errors(path, err)) from None
    if not allow_unverified:
        _check_verified(root, manifest)
    _check_files(root, manifest, checksums)
    if manifest.format == "onnx":
        _check_onnx_external_data(root, manifest)
    return manifest


def now() -> datetime:
    return datetime.now().astimezone()
