//! `dummy_test`: checks the runner. Arguments: none (succeed), `fail`, `panic`, or
//! `sleep SECONDS`.

use async_trait::async_trait;

use super::{Task, TaskContext};

pub struct Dummy;

#[async_trait]
impl Task for Dummy {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        match ctx.arguments.first().map(String::as_str) {
            Some("fail") => anyhow::bail!("failing as asked"),
            Some("panic") => panic!("dummy_test panics as asked"),
            Some("sleep") => {
                let seconds: u64 = ctx
                    .arguments
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(3600);
                tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
                Ok(format!("slept {seconds}s"))
            }
            _ => Ok("dummy_test ran".into()),
        }
    }
}
