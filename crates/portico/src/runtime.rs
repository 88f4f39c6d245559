//! The runtime wrapper of the long-lived commands (`run`, `xds`): one current-thread tokio
//! runtime, the command's error logged and turned into the exit status.

use std::process::ExitCode;

/// Runs a long-lived command (`run`, `xds`) on a current-thread runtime; its error is logged
/// and becomes the exit status.
pub fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portico: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
