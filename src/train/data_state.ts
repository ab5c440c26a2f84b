// data_state.ts: the position of a streaming data source in a checkpoint. Sources whose batches are a pure function
// of (seed, epoch, index) need nothing; a streaming source (src/data/webdataset_stream.ts) has a state per rank, which
// every rank publishes through the rendezvous store and rank 0 writes as `data_state` (one entry per rank).
import type { ProcessGroup } from "../torch/dist.ts";

/** A TrainSource that can say where it is and go back there. */
export interface StatefulSource {
  state?(): unknown;
  restore?(state: unknown): void;
}

/** Every rank's source state on rank 0 (null elsewhere, or when the source has none). All ranks must call it. */
export function gatherDataState(pg: ProcessGroup, source: StatefulSource, step: number): unknown[] | null {
  if (source.state === undefined) return null;
  const mine = JSON.stringify(source.state());
  if (pg.world === 1) return [JSON.parse(mine)];
  pg.storeSet(`dc/data-state/${step}/${pg.rank}`, mine);
  if (pg.rank !== 0) return null;
  return Array.from({ length: pg.world }, (_, r) => JSON.parse(pg.storeGetText(`dc/data-state/${step}/${r}`)));
}

/** Puts this rank's source where the checkpoint's `data_state` says; a message when it cannot be exact. */
export function restoreDataState(source: StatefulSource, saved: unknown, rank: number, world: number): string | null {
  if (source.restore === undefined) return null;
  if (!Array.isArray(saved)) {
    return "resume: the checkpoint holds no data stream position; the data stream starts from its beginning";
  }
  if (saved.length !== world) {
    throw new Error(`resume: the checkpoint's data state is for ${saved.length} ranks, this run has ${world}`);
  }
  source.restore(saved[rank]);
  return null;
}
