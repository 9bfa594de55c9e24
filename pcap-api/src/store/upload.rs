//! One object's multipart upload: parts go up one at a time while the next
//! fills, so a capture holds at most two parts in memory whatever its
//! length. `complete` makes the object; `abort` leaves neither an object
//! nor an unfinished upload behind.

use object_store::{MultipartUpload, PutPayload, path::Path};
use tokio::task::JoinHandle;

use super::{StoreError, config::S3_MAX_PARTS};

pub struct Upload {
    multipart: Box<dyn MultipartUpload>,
    path: Path,
    /// The part being sent while the next one fills.
    in_flight: Option<JoinHandle<object_store::Result<()>>>,
    parts: usize,
}

impl Upload {
    pub fn new(upload: Box<dyn MultipartUpload>, path: Path) -> Self {
        Self {
            multipart: upload,
            path,
            in_flight: None,
            parts: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the previous part, then starts sending `data`. Refuses a
    /// part past S3's limit with a clear message (`store.max_size` keeps
    /// captures well below it).
    pub async fn put_part(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        if self.parts as u64 >= S3_MAX_PARTS {
            return Err(StoreError::Failed(format!(
                "{} parts already: S3 takes at most {S3_MAX_PARTS}",
                self.parts
            )));
        }
        self.wait_in_flight().await?;
        let part = self.multipart.put_part(PutPayload::from(data));
        self.in_flight = Some(tokio::spawn(part));
        self.parts += 1;
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), StoreError> {
        if let Some(part) = self.in_flight.take() {
            part.await
                .map_err(|e| StoreError::Failed(format!("a part upload died: {e}")))?
                .map_err(|e| StoreError::Failed(super::error::error_message(&e)))?;
        }
        Ok(())
    }

    /// Sends `last` (the final, possibly short, part) and completes the
    /// object.
    pub async fn complete(mut self, last: Vec<u8>) -> Result<(), StoreError> {
        if !last.is_empty() || self.parts == 0 {
            self.put_part(last).await?;
        }
        self.wait_in_flight().await?;
        self.multipart
            .complete()
            .await
            .map_err(|e| StoreError::Failed(super::error::error_message(&e)))?;
        Ok(())
    }

    /// Aborts the upload, after the part in flight has settled (a part that
    /// lands after the abort would start nothing, but would be a wasted
    /// upload).
    pub async fn abort(mut self) -> Result<(), StoreError> {
        let _ = self.wait_in_flight().await;
        self.multipart
            .abort()
            .await
            .map_err(|e| StoreError::Failed(super::error::error_message(&e)))
    }
}
