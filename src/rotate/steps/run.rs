//! Every step in order, from wherever the rotation stands.

use crate::etcd::scan;
use crate::rotate::{PrepareRequest, RotateError, Rotator};
use crate::state::Stage;

impl Rotator<'_> {
    /// Runs every step in order from where the rotation stands (prepare first when none is in
    /// progress) until it is finished; it stops at the first step that refuses.
    pub async fn run(
        &self,
        req: &PrepareRequest,
        progress: &mut dyn scan::Progress,
    ) -> Result<(), RotateError> {
        // A write a previous run left pending is completed (or dropped) first: it decides
        // whether a rotation is in progress.
        let mut st = self.load_state()?;
        self.load_checked(&mut st)?;
        if st.rotation.is_none() {
            self.prepare(req).await?;
        }
        loop {
            let st = self.load_state()?;
            let Some(r) = st.rotation else { return Ok(()) };
            match r.stage {
                Stage::Prepared => self.promote().await?,
                Stage::Promoted => {
                    self.reencrypt(progress).await?;
                }
                Stage::Reencrypted => {
                    self.prune().await?;
                }
            }
        }
    }
}
