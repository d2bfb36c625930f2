// vunify's library API; the CLI is a thin layer over it.
export { unify, undo, planRun, serverPath, DEFAULT_DB, DEFAULT_VSERVERS_DIR } from './engine.js';
export type { CommonOptions, UnifyOptions } from './engine.js';
export type { Report, Counters, FileLine } from './report.js';
export { formatText } from './report.js';
export { plan, SKIP_REASONS } from './plan.js';
export type { Decision, SkipReason, PlanInput } from './plan.js';
export { VunifyError, EXIT } from './errors.js';
export { Index, SCHEMA_VERSION } from './store/index-db.js';
export { applyPlan, savePlan } from './apply-plan.js';
export type { ApplyPlanOptions } from './apply-plan.js';
export { readPlan, PLAN_VERSION } from './plan-file.js';
export type { PlanDocument } from './plan-file.js';
export { formatMetrics } from './metrics.js';
export type { RunMetrics } from './metrics.js';
