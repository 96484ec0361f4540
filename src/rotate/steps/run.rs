//! Every step in order, from wherever the rotation stands.

use crate::etcd::scan;
use crate::rotate::{PrepareRequest, RotateError, Rotator, Stage};

impl Rotator<'_> {
    pub async fn run(
        &self,
        req: &PrepareRequest,
        progress: &mut dyn scan::Progress,
    ) -> Result<(), RotateError> {
        if self.load_state()?.rotation.is_none() {
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
