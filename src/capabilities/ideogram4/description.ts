/** The Markdown `info.description` of the Ideogram 4 document. */
import type { Ideogram4Settings } from './settings.js';

/** A caption that passes mflux's strict validation (the original's own example did not: docs/compatibility.md §11.4). */
export const EXAMPLE_CAPTION = {
  high_level_description: 'A clean studio photo of a white notebook with the word MFLUX on the cover.',
  style_description: {
    aesthetics: 'minimal, clean product photography',
    lighting: 'soft daylight from a window on the left',
    photo: 'shallow depth of field, 50mm lens',
    medium: 'photograph',
    color_palette: ['#F5F5F0', '#1A1A1A', '#C8A27A'],
  },
  compositional_deconstruction: {
    background: 'Warm wooden desk with soft window light.',
    elements: [
      { type: 'obj', bbox: [250, 300, 850, 700], desc: 'A closed white notebook lying flat, centered.' },
      {
        type: 'text',
        bbox: [420, 380, 560, 620],
        text: 'MFLUX',
        desc: 'Crisp black uppercase letters centered on the notebook cover.',
        color_palette: ['#1A1A1A'],
      },
    ],
  },
};

export function ideogram4Description(s: Ideogram4Settings): string {
  return `Typography-focused text-to-image generation with Ideogram 4 (FP8, run by mflux — or by kiapi's built-in preview engine when no real engine is installed).

One operation: \`/generate\` (text-to-image). Ideogram 4 excels at legible text and layout. There is no image-to-image, no training, and no hosted Magic Prompt.

## Upstream docs
- [mflux — Ideogram 4](https://github.com/filipstrand/mflux/blob/main/src/mflux/models/ideogram4/README.md) — the MLX engine kiapi runs
- [ideogram-ai/ideogram-4-fp8](https://huggingface.co/ideogram-ai/ideogram-4-fp8) — the \`fp8\` weights (gated)
- [Ideogram 4 prompting guide](https://github.com/ideogram-oss/ideogram-4/blob/main/docs/prompting.md)

## Models
- **fp8** (default) — \`ideogram-ai/ideogram-4-fp8\`, the only variant (\`GET /v1/image/ideogram4/models\`). The Hugging Face repo is **gated**: accept its licence on the model page and log in (\`hf auth login\` or \`HF_TOKEN\`) before \`kiapi activate --model fp8\`. Non-FP8 checkpoint layouts are not supported.

## Prompting (JSON caption preferred)
Ideogram 4 follows a **structured JSON caption** far better than plain text. Send \`prompt\` as a JSON object; kiapi keeps your key order (it matters). This caption passes \`strict_caption_validation\`:

\`\`\`json
${JSON.stringify(EXAMPLE_CAPTION, null, 2)}
\`\`\`

- \`bbox\` is **\`[y_min, x_min, y_max, x_max]\`** in normalized **0-1000** layout coordinates (y first — the order mflux validates and the model was trained on), whole numbers only.
- \`type\` is \`text\` (needs a \`text\` field) or \`obj\`; element key order: \`type, bbox, text, desc, color_palette\` (no \`text\` on \`obj\`).
- \`style_description\` is an object: \`aesthetics, lighting, photo, medium\` (photo) or \`aesthetics, lighting, medium, art_style\` (art), then optional \`color_palette\` (up to 16 uppercase \`#RRGGBB\`; up to 5 per element).
- kiapi checks the caption before queueing. With \`strict_caption_validation=true\` any problem is a **400** listing every problem (plain text always fails strict mode). Otherwise problems are returned in the result as \`params.caption_warnings\` (when \`warn_on_caption_issues\` is true, the default).

## Presets
\`preset\` bundles steps + guidance schedule + noise schedule: \`V4_TURBO_12\` (12 steps) → \`V4_DEFAULT_20\` (20, default) → \`V4_QUALITY_48\` (48, best).

## Safety filter
The model itself may return a picture reading "Image blocked by safety filter" (also for harmless prompts). kiapi stores whatever image came back; every result carries \`safety_filter_note\` saying so.

## Tips
- For a quick image call \`sync\` without \`Accept: application/json\`: the raw bytes come back (\`curl -o out.png\`).
- \`width\`/\`height\` must be multiples of 16 within ${s.minWidth}..${s.maxWidth} (default ${s.defaultWidth}).
- Real inference needs the weights on disk (~27.5 GB): run \`kiapi activate --model fp8\` first. Until then the server answers 503 with that command — it never downloads in the middle of a request.
- With the preview engine (\`params.engine = "preview"\`) images are drawings of the request: caption elements are drawn in their boxes, which is a quick way to check a layout.

## Performance
- **fp8**: roughly 26-28 GiB peak memory at 1024x1024 / V4_DEFAULT_20.
`;
}
