//! `demo` and `simulate`: the simulated contact center, against this machine or a
//! running service.

use super::{runtime, SimArgs};
use crate::sim::{demo, simulate};
use anyhow::bail;

pub fn demo(port: u16, sim: SimArgs) -> anyhow::Result<()> {
    runtime()?.block_on(demo::run(demo::Options {
        port,
        agents: sim.agents,
        rate: sim.rate,
        duration: sim.duration,
        seed: sim.seed,
    }))
}

pub fn simulate(
    url: String,
    auth_token: String,
    public_url: Option<String>,
    sim: SimArgs,
) -> anyhow::Result<()> {
    let opts = simulate::Options {
        url,
        public_url,
        auth_token,
        agents: sim.agents,
        rate: sim.rate,
        duration: sim.duration,
        seed: sim.seed,
        concurrency: 32,
    };
    let r = runtime()?.block_on(simulate::run(&opts));
    println!(
        "sent {}, acknowledged {}, refused {}, errors {} in {:.1} s",
        r.sent,
        r.accepted,
        r.refused,
        r.errors,
        r.elapsed.as_secs_f64()
    );
    if r.refused + r.errors > 0 {
        bail!("{} callbacks were not acknowledged", r.refused + r.errors);
    }
    Ok(())
}
