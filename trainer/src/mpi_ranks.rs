//! The ranks of an MPI job (`mpirun -np N kinglet-train …`), on Open MPI
//! through the `mpi` crate: [`Ranks`] as blocking sends to rank 0, received
//! there in shard order (never in order of arrival, so timing cannot change
//! a sum), and broadcasts from rank 0. Only the main thread calls MPI; rayon
//! threads compute each rank's shards as in one process.

use crate::error::TrainError;
use crate::ranks::{named, share, Ranks};
use crate::shards::{add_gradient, mean_loss, BatchShards};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

/// Variables an MPI launcher sets in every process it starts (Open MPI's
/// mpirun, then PMI and PMIx launchers such as MPICH's and Slurm's).
const LAUNCHER_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

/// This process's rank in an MPI job.
pub struct MpiRanks {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// One received shard gradient, on rank 0. [layout.total]
    received: Vec<f32>,
    /// Finalizes MPI when dropped, after `world`.
    _universe: Universe,
}

impl MpiRanks {
    /// The ranks of the MPI job that started this process, or `None` when
    /// no MPI launcher did: then the process trains alone, as a build
    /// without the `mpi` feature does.
    pub fn from_launcher() -> Option<MpiRanks> {
        if !LAUNCHER_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return None;
        }
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        // A panic unwinding into MPI_Finalize would wait there for ranks
        // that wait for this one: end the job instead.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            SimpleCommunicator::world().abort(101);
        }));
        Some(MpiRanks {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            received: Vec::new(),
            _universe: universe,
        })
    }
}

impl Ranks for MpiRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn combine_micro_batch(&mut self, shards: &mut BatchShards, grads: &mut [f32]) -> f64 {
        let root = self.world.process_at_rank(0);
        if self.rank != 0 {
            let losses: Vec<f64> = shards.losses().map(|(loss, _)| loss).collect();
            root.send(&losses[..]);
            root.send(&grads[..]);
            for part in shards.parts() {
                root.send(part);
            }
            grads.fill(0.0);
            shards.clear_parts();
            return f64::NAN;
        }
        let mut all: Vec<(f64, usize)> = shards.losses().collect();
        shards.add_into(grads);
        let sequences = shards.all_sequences().to_vec();
        self.received.resize(grads.len(), 0.0);
        for rank in 1..self.size {
            let from = self.world.process_at_rank(rank as i32);
            let theirs = share(rank, self.size, sequences.len());
            let mut losses = vec![0.0f64; theirs.len()];
            from.receive_into(&mut losses[..]);
            for (loss, index) in losses.into_iter().zip(theirs) {
                from.receive_into(&mut self.received[..]);
                add_gradient(grads, &self.received);
                all.push((loss, sequences[index]));
            }
        }
        mean_loss(&all)
    }

    fn share_step(&mut self, losses: &mut [f64], grads: &mut [f32]) {
        let root = self.world.process_at_rank(0);
        root.broadcast_into(losses);
        if losses.iter().all(|l| l.is_finite()) {
            root.broadcast_into(grads);
        }
    }

    fn first_failure(&mut self, ok: bool) -> Option<usize> {
        let mut failed = vec![0u8; self.size];
        self.world.all_gather_into(&u8::from(!ok), &mut failed[..]);
        failed.iter().position(|&f| f != 0)
    }

    fn broadcast_bytes(&mut self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    fn lone_failure(&self, error: TrainError) -> TrainError {
        named(self.rank, error).print();
        self.world.abort(1)
    }
}
