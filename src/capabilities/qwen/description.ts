/** The Markdown `info.description` of the Qwen document: what an agent needs to call it well. */
import type { QwenSettings } from './settings.js';

export function qwenDescription(s: QwenSettings): string {
  return `Image generation and editing with Alibaba's Qwen-Image models (run by mflux, or by kiapi's built-in preview engine when no real engine is installed).

Two operations: \`/generate\` (text-to-image, or image-to-image when \`init_image\` is given) and \`/edit\` (natural-language editing of one or more reference images). Qwen-Image is strong at rendered text and at following edit instructions.

## Upstream docs
- [mflux — Qwen Image](https://github.com/filipstrand/mflux/blob/main/src/mflux/models/qwen/README.md) — the MLX engine kiapi runs
- [Qwen/Qwen-Image](https://huggingface.co/Qwen/Qwen-Image) — generate weights
- [Qwen/Qwen-Image-Edit-2509](https://huggingface.co/Qwen/Qwen-Image-Edit-2509) — edit weights

## Models
- **image** (default) — text-to-image and img2img. The only variant \`/generate\` accepts.
- **edit-2509** — instruction-based editing. The only variant \`/edit\` accepts.

Each endpoint is pinned to its variant (another variant is a 400); list them at \`GET /v1/image/qwen/models\`. Omitted \`steps\`/\`guidance\`/\`quantize\`/size/seed are filled in server-side and the values used are recorded in the result \`params\` (with the input file ids), so a result can be reproduced.

## generate vs edit
- **generate** is text-to-image. Pass \`init_image\` to start from an image (img2img): \`image_strength\` in 0..1 is how much of the input is **kept** — higher keeps more (the engine skips that fraction of the denoising steps), lower follows the prompt more freely, 0 ignores the input. Without \`image_strength\` an \`init_image\` uses ${s.defaultImageStrength}.
- **edit** takes a list of reference \`images\` under one instruction. mflux conditions on every image at one small shared size (the **last** image sets its aspect ratio), and its vision-language encoder reads only the **first** image; the output size is \`width\`×\`height\` (default ${s.defaultWidth}×${s.defaultHeight}), not the input's.

## Models in memory
The default build uses q${s.defaultQuantize ?? '-'} quantization. A request with \`loras\` or a different \`quantize\` needs a differently built model; kiapi keeps such builds resident under the same memory budget as the default one (KIAPI_MEMORY_LIMIT_GB), evicting the least recently used when room is needed, so repeating the same LoRA request does not rebuild. \`GET /health\` shows what is loaded.

## LoRA
Pass up to ${s.maxLoras} adapters as \`loras: [{file, scale}]\`, each \`file\` a FileRef (upload the \`.safetensors\` with \`POST /v1/files\` and pass \`{"type": "file_id", "file_id": …}\`, or a URL / data URL).

## Tips
- For a quick image call \`sync\` without \`Accept: application/json\`: the raw bytes come back (\`curl -o out.png\`) with \`X-Kiapi-File-Id\` / \`X-Kiapi-Job-Id\` headers.
- \`width\`/\`height\` must be multiples of 16 and at most ${s.maxWidth}×${s.maxHeight} (default ${s.defaultWidth}).
- Qwen-Image renders legible text well: spell out the wanted text in the prompt.
- \`scheduler\` is \`linear\` unless you know you want \`flow_match_euler_discrete\`; other names are refused (422).
- Real inference needs the weights on disk (~58 GB per model): run \`kiapi activate --model image\` (or \`edit-2509\`) first. Until then the server answers 503 with that command — it never downloads in the middle of a request.
- With the preview engine (\`params.engine = "preview"\`) images are drawings of the request, not model output.

## Performance
- Weights are large (~58 GB download each); kiapi defaults to q8 (~22 GB resident per model).
- A new LoRA set or \`quantize\` costs one model load (tens of seconds); repeats reuse the loaded build.
`;
}
