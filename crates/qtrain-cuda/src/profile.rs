//! Device-side timing for benchmarks: CUDA events recorded on the backend's stream at the start of
//! every phase of a step (`Backend::begin_phase`: forward, recompute, backward, …) and of every op,
//! labelled with its kind (GEMM, LoRA, attention, element-wise, loss, optimizer). The device time
//! from one mark to the next on a timeline belongs to the first mark's label, so idle device time
//! while the host prepares the next op is counted with the op before it.
//!
//! Off by default: no event is created unless [`crate::CudaBackend`]'s profiling is turned on.
//! Must not synchronise while recording; only [`Profiler::finish`] waits.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::error::Result;

/// The kind of an op, for the per-kind totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Gemm,
    Lora,
    Attention,
    Elementwise,
    Loss,
    Optimizer,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Gemm => "GEMM",
            OpKind::Lora => "LoRA",
            OpKind::Attention => "attention",
            OpKind::Elementwise => "element-wise",
            OpKind::Loss => "loss",
            OpKind::Optimizer => "optimizer",
        }
    }
}

/// One timeline of labelled marks.
#[derive(Default)]
struct Timeline {
    marks: Vec<(&'static str, CudaEvent)>,
}

impl Timeline {
    fn mark(&mut self, ctx: &Arc<CudaContext>, stream: &CudaStream, label: &'static str) -> Result<()> {
        // Consecutive marks with one label add nothing: keep the first.
        if self.marks.last().is_some_and(|(l, _)| *l == label) {
            return Ok(());
        }
        let ev = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        ev.record(stream)?;
        self.marks.push((label, ev));
        Ok(())
    }

    /// Milliseconds per label, in order of first appearance, closing the last stretch at `end`.
    fn totals(&self, end: &CudaEvent) -> Result<Vec<(String, f64)>> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for (i, (label, ev)) in self.marks.iter().enumerate() {
            let next = self.marks.get(i + 1).map_or(end, |(_, e)| e);
            let ms = f64::from(ev.elapsed_ms(next)?);
            match out.iter_mut().find(|(l, _)| l == label) {
                Some((_, total)) => *total += ms,
                None => out.push((label.to_string(), ms)),
            }
        }
        Ok(out)
    }
}

/// Both timelines of one profiled stretch.
#[derive(Default)]
pub struct Profiler {
    phases: Timeline,
    ops: Timeline,
}

impl Profiler {
    pub fn phase(&mut self, ctx: &Arc<CudaContext>, stream: &CudaStream, name: &'static str) -> Result<()> {
        self.phases.mark(ctx, stream, name)
    }

    pub fn op(&mut self, ctx: &Arc<CudaContext>, stream: &CudaStream, kind: OpKind) -> Result<()> {
        self.ops.mark(ctx, stream, kind.name())
    }

    /// Records the end, waits for it, and returns the totals (phases, op kinds).
    pub fn finish(self, ctx: &Arc<CudaContext>, stream: &CudaStream) -> Result<qtrain_core::Profile> {
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        end.record(stream)?;
        end.synchronize()?;
        Ok(qtrain_core::Profile { phases_ms: self.phases.totals(&end)?, ops_ms: self.ops.totals(&end)? })
    }
}
