// Types for farm.mjs (plain JavaScript), for the TypeScript tests that import it.
export interface FarmParams {
  profile: string; servers: number; filesPerServer: number;
  smallMin: number; smallMax: number; largeFraction: number; largeMin: number; largeMax: number;
  seed: number; scale: number; generator: number;
}
export type Variant = 'identical' | 'oneByte' | 'mode' | 'owner' | 'unique';
export interface FileSpec {
  i: number; rel: string; size: number; large: boolean; mode: number; uid: number; gid: number;
  mtime: number; off: number; version: number; tag: number; flip: { pos: number; xor: number } | null;
  variant?: Variant;
}
export interface FarmManifest {
  params: FarmParams; dir: string; vserversDir: string; servers: string[]; files: number; bytes: number;
  largeFiles: number; serverVariants: Record<Variant, number>; ownerVariantsWritten: boolean;
  generationSeconds: number; createdAt: string; reused: boolean;
}
export interface LinkCensus {
  expectedIdentical: number; linkedIdentical: number; metadataVariants: number;
  linkedMetadataDiffers: number; linkedContentDiffers: number;
}
export const GENERATOR_VERSION: number;
export const PROFILES: Record<string, Omit<FarmParams, 'profile' | 'seed' | 'scale' | 'generator'>>;
export const VARIANT_FRACTIONS: { oneByte: number; mode: number; owner: number; unique: number };
export const VARIANTS: Variant[];
export function h32(seed: number, a: number, b?: number, c?: number): number;
export function farmParams(opts?: Partial<FarmParams> & { profile?: string }): FarmParams;
export function bytePool(p: FarmParams): Buffer;
export function fileSpec(p: FarmParams, i: number): FileSpec;
export function variantOf(p: FarmParams, s: number, i: number): Variant;
export function serverFileSpec(p: FarmParams, s: number, i: number, canChown?: boolean): FileSpec & { variant: Variant };
export function changedFileSpec(p: FarmParams, i: number, version: number): FileSpec;
export function specBuffers(p: FarmParams, spec: FileSpec, header?: Buffer): Buffer[];
export function specContent(p: FarmParams, spec: FileSpec): Buffer;
export function isRoot(): boolean;
export function writeSpec(p: FarmParams, abs: string, spec: FileSpec, opts?: { exclusive?: boolean }): void;
export function serverName(s: number): string;
export function serverNames(p: FarmParams): string[];
export function manifestPath(farmDir: string): string;
export function writeFarm(farmDir: string, params: Partial<FarmParams>, opts?: { force?: boolean; log?: (msg: string) => void }): FarmManifest;
export function changedIndexes(p: FarmParams, percent: number, version?: number): number[];
export function changeFarm(vserversDir: string, p: FarmParams, indexes: number[], version?: number): number[];
export function linkCensus(vserversDir: string, p: FarmParams, changed?: number[]): LinkCensus;
