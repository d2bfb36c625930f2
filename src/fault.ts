// Test-only fault injection: with VUNIFY_FAULT_AFTER=N the process kills itself (SIGKILL,
// no cleanup of any kind) at the Nth change point of apply, so tests can prove that
// `vunify recover` finishes or rolls back whatever was under way. Unset, it costs a compare.
import { appendFileSync } from 'node:fs';

const after = Number(process.env.VUNIFY_FAULT_AFTER ?? 0);
let passed = 0;

export function faultPoint(): void {
  if (after > 0 && ++passed === after) process.kill(process.pid, 'SIGKILL');
}

/**
 * Test-only: VUNIFY_TEST_WRITE_AFTER_VERIFY=PATH appends a byte to PATH right after the
 * byte comparison, as a concurrent writer could at the worst moment.
 */
export function afterVerify(): void {
  const p = process.env.VUNIFY_TEST_WRITE_AFTER_VERIFY;
  if (p) appendFileSync(p, 'x');
}
