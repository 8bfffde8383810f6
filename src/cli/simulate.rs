//! `demo` and `simulate`: the simulated contact center, against this machine or a
//! running service.

use super::{runtime, SimArgs};
use crate::sim::{demo, simulate};
use anyhow::bail;
use std::time::Duration;

pub fn demo(opts: demo::Options) -> anyhow::Result<()> {
    runtime()?.block_on(demo::run(opts))
}

/// Posts a planned day, or with `live` (the history's length) the live floor until
/// Ctrl-C or `--duration`.
pub fn simulate(
    url: String,
    auth_token: String,
    public_url: Option<String>,
    live: Option<Duration>,
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
    let r = runtime()?.block_on(async {
        match live {
            Some(history) => {
                let ctrl_c = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                simulate::run_live(&opts, history, ctrl_c).await
            }
            None => simulate::run(&opts).await,
        }
    });
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
