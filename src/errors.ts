// Typed errors: every failure carries a code, the path it concerns and a reason,
// and prints as one line. Only the CLI maps them to exit codes.

export const EXIT = {
  ok: 0,
  /** The run finished, but some files failed (see the report). */
  partial: 1,
  /** Bad usage or bad input; nothing was changed. */
  usage: 2,
  /** Another vunify run holds the lock. */
  locked: 3,
  /** An unexpected internal error. */
  internal: 4,
} as const;

export type ErrorCode =
  | 'USAGE'
  | 'BAD_SERVER'
  | 'BAD_PACKAGE'
  | 'NO_PACKAGE_DB'
  | 'NO_RPM'
  | 'RPM_FAILED'
  | 'OTHER_FILESYSTEM'
  | 'NO_IMMUTABLE'
  | 'NO_REFLINK'
  | 'INDEX'
  | 'INDEX_AFTER_CHANGES'
  | 'BAD_PLAN'
  | 'BAD_POOL'
  | 'LOCKED'
  | 'IO';

const exitFor: Record<ErrorCode, number> = {
  USAGE: EXIT.usage,
  BAD_SERVER: EXIT.usage,
  BAD_PACKAGE: EXIT.usage,
  NO_PACKAGE_DB: EXIT.usage,
  NO_RPM: EXIT.usage,
  RPM_FAILED: EXIT.usage,
  OTHER_FILESYSTEM: EXIT.usage,
  NO_IMMUTABLE: EXIT.usage,
  NO_REFLINK: EXIT.usage,
  INDEX: EXIT.usage,
  // An index write failed after the run had changed files: 2 would say nothing changed.
  INDEX_AFTER_CHANGES: EXIT.partial,
  // A plan file that is not this farm's, this index's, or this vunify's: nothing applied.
  BAD_PLAN: EXIT.usage,
  // --pool-dir: not a folder, inside a root, holding a root, or on another filesystem.
  BAD_POOL: EXIT.usage,
  LOCKED: EXIT.locked,
  IO: EXIT.partial,
};

export class VunifyError extends Error {
  readonly code: ErrorCode;
  readonly path?: string;
  readonly reason: string;
  readonly exitCode: number;

  constructor(code: ErrorCode, reason: string, path?: string, options?: { cause?: unknown }) {
    super(path ? `${path}: ${reason}` : reason, options);
    this.name = 'VunifyError';
    this.code = code;
    this.reason = reason;
    this.path = path;
    this.exitCode = exitFor[code];
  }
}

/** True when err is a system error with one of the given errno codes. */
export function isErrno(err: unknown, ...codes: string[]): err is NodeJS.ErrnoException {
  return (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as NodeJS.ErrnoException).code === 'string' &&
    codes.includes((err as NodeJS.ErrnoException).code as string)
  );
}

/** One line for any error: the errno code and message, never a stack. */
export function oneLine(err: unknown): string {
  if (err instanceof VunifyError) return err.message;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    // Calls go through /proc/self/fd/N/name (no symlink followed): the name is what means something.
    const msg = err.message.replace(/\s+/g, ' ').replace(/\/proc\/self\/fd\/\d+\/?/g, '').trim();
    return code && !msg.startsWith(code) ? `${code}: ${msg}` : msg;
  }
  return String(err).replace(/\s+/g, ' ');
}
