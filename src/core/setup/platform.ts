/**
 * Which MLX build this machine can run. mflux runs on MLX: Apple Silicon natively, or Linux with
 * an NVIDIA GPU through `mlx[cuda13]`. Anything else gets a refusal that says what was found and
 * what is needed, instead of a pip install that fails half-way or an engine that cannot start.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { SetupError } from '../errors.js';
import type { PlatformKind, SetupSettings } from './setup-settings.js';

export interface PlatformInfo {
  kind: PlatformKind;
  /** What was found, for messages (e.g. `Linux x64 without an NVIDIA GPU (…)`). */
  detail: string;
}

/** The machine facts detection uses; tests and other callers may substitute them. */
export interface PlatformFacts {
  os: NodeJS.Platform;
  arch: string;
  /** Apple Silicon hardware, also when this Node runs under Rosetta. */
  appleSilicon(): boolean;
  /** First line of `nvidia-smi -L`, or why it could not be run. */
  nvidiaSmi(): { ok: boolean; text: string };
  procDriverNvidia(): boolean;
}

export const hostFacts: PlatformFacts = {
  os: process.platform,
  arch: process.arch,
  appleSilicon() {
    if (process.arch === 'arm64') return true;
    const r = spawnSync('sysctl', ['-n', 'hw.optional.arm64'], { encoding: 'utf8', timeout: 5000 });
    return r.status === 0 && r.stdout.trim() === '1';
  },
  nvidiaSmi() {
    const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 15_000 });
    if (r.error) return { ok: false, text: (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'nvidia-smi not found' : r.error.message };
    if (r.status !== 0) return { ok: false, text: `nvidia-smi failed: ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}` };
    return { ok: true, text: r.stdout.trim().split('\n')[0] ?? 'NVIDIA GPU' };
  },
  procDriverNvidia() {
    return fs.existsSync('/proc/driver/nvidia');
  },
};

export function detectPlatform(settings: Pick<SetupSettings, 'platform'>, facts: PlatformFacts = hostFacts): PlatformInfo {
  if (settings.platform !== 'auto') {
    return { kind: settings.platform, detail: `KIAPI_ACTIVATE_PLATFORM=${settings.platform}` };
  }
  if (facts.os === 'darwin') {
    if (facts.appleSilicon()) return { kind: 'darwin-arm64', detail: 'macOS on Apple Silicon' };
    return { kind: 'other', detail: `macOS on an Intel Mac (${facts.arch}); MLX needs Apple Silicon` };
  }
  if (facts.os === 'linux') {
    const smi = facts.nvidiaSmi();
    if (smi.ok) return { kind: 'linux-cuda', detail: `Linux ${facts.arch} with ${smi.text}` };
    if (facts.procDriverNvidia()) return { kind: 'linux-cuda', detail: `Linux ${facts.arch} with the NVIDIA driver loaded (/proc/driver/nvidia)` };
    return { kind: 'other', detail: `Linux ${facts.arch} without an NVIDIA GPU (${smi.text}; /proc/driver/nvidia absent)` };
  }
  return { kind: 'other', detail: `${facts.os} ${facts.arch}` };
}

/** Throws the refusal for a platform the engine cannot run on. */
export function assertEngineSupported(info: PlatformInfo): void {
  if (info.kind !== 'other') return;
  throw new SetupError(
    `the mflux engine cannot run on this machine. Detected: ${info.detail}.\n` +
      'It needs macOS on Apple Silicon (MLX), or Linux with an NVIDIA GPU and its driver loaded ' +
      '(`nvidia-smi` works; kiapi installs mlx[cuda13]).\n' +
      'The preview engine keeps working here (`kiapi run`), and weights kept elsewhere can be used on a ' +
      'supported machine by pointing KIAPI_QWEN_IMAGE_MODEL (etc.) at their directory.\n' +
      'On Linux without a GPU, KIAPI_ACTIVATE_PLATFORM=linux-cpu installs MLX for the CPU instead (it works, but an image takes very long).',
  );
}
