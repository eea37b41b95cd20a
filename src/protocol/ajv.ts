import { Ajv } from 'ajv';

/** One ajv setup for everything the gateway validates: wire frames, HTTP bodies and config. */
export function createAjv(options: { coerceTypes?: boolean; useDefaults?: boolean } = {}): Ajv {
  return new Ajv({
    allErrors: false,
    strict: true,
    // Our schemas are constants of the code, compiled by the tests; checking each against JSON Schema's
    // meta-schema compiled that meta-schema in every thread at start (~100 ms of a process start).
    // Strict mode still refuses unknown keywords and the like at compile time.
    validateSchema: false,
    allowUnionTypes: true,
    coerceTypes: options.coerceTypes ?? false,
    useDefaults: options.useDefaults ?? false,
  });
}

export function describeAjvErrors(errors: readonly { instancePath: string; message?: string | undefined }[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  const e = errors[0]!;
  return `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`;
}
