/**
 * The settings of `kiapi service`: the name the service is registered under and, for tests, the
 * platform whose service manager it drives. Read like every other setting, so they appear in
 * `kiapi config template` and a bad value is reported the same way.
 */
import { EnvReader } from '../../core/config.js';

export type ServicePlatform = 'darwin' | 'linux';

export interface ServiceSettings {
  /** The launchd label / systemd unit name; null = the platform's default. */
  label: string | null;
  platform: 'auto' | ServicePlatform;
}

/** Letters, digits, dots, dashes and underscores: valid as a launchd label, a unit name and a file name. */
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function readServiceSettings(env: Record<string, string | undefined>): ServiceSettings {
  const r = new EnvReader(env);
  const label = r.optionalString(
    'KIAPI_SERVICE_LABEL',
    'name of the kiapi service: launchd label on macOS (default io.github.kiarina.kiapi), systemd user unit on Linux (default kiapi)',
  );
  const platform = r.choice(
    'KIAPI_SERVICE_PLATFORM',
    ['auto', 'darwin', 'linux'] as const,
    'auto',
    '(tests/advanced) the service manager kiapi service drives: darwin = launchd, linux = systemd --user (auto: this machine)',
  );
  if (label !== null && !LABEL.test(label)) {
    r.problems.push(`KIAPI_SERVICE_LABEL=${JSON.stringify(label)}: expected letters, digits, '.', '-' or '_' (e.g. io.github.kiarina.kiapi)`);
  }
  r.check();
  return { label, platform };
}
