//! `atrest scan`: how every stored value of the covered resources is encrypted.

use std::time::Duration;

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{
    self,
    scan::{SCAN_HINTS, scan_table},
};
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::{Context, ScanRequest, parse_resources};

/// Exit 0 when every value is on its write key and readable, 1 otherwise.
pub async fn run(a: args::ScanArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(&a.source, Some(&a.etcd), None))?;
    let req = ScanRequest {
        resources: parse_resources(&a.resources)?,
        verify: a.verify,
        max_list: a.max_list,
        key_archive: a.key_archive.clone(),
        patience: Duration::from_secs(a.etcd.etcd_patience),
        history: a.history,
    };
    let mut bar = Bar::new(
        if a.verify {
            "scanning (verify)"
        } else {
            "scanning"
        },
        a.progress,
    );
    let report = match &a.snapshot {
        Some(file) => ctx.scan_file(file, &req, &mut bar).await,
        None => {
            let client = ctx.etcd().await?;
            ctx.scan(&client, &req, &mut bar).await
        }
    };
    bar.finish();
    let report = report?;
    match a.output {
        Output::Json => render::print_json(&report),
        Output::Table => crate::cli::out!("{}", scan_table(&report, &SCAN_HINTS)),
    }
    Ok(if report.clean() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}
