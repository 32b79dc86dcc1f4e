//! Comparing stored resources with desired ones (`apply`, `import`), and
//! the helpers `apply` shares with the other verbs.

use super::*;

/// Resources `apply` manages: what the control plane sets can be cleared so a
/// file and a stored resource compare.
pub(super) trait Stored: PartialEq + Clone {
    /// Clears the output-only fields and returns the revision they held.
    fn strip(&mut self) -> u64;
}

macro_rules! stored {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn strip(&mut self) -> u64 {
                self.created_at = None;
                self.updated_at = None;
                std::mem::take(&mut self.revision)
            }
        }
    )*};
}
stored!(config::Api, config::UsagePlan, config::DomainName);

impl Stored for config::Stage {
    fn strip(&mut self) -> u64 {
        self.created_at = None;
        self.updated_at = None;
        // Moved only by flushes; a file does not set it.
        self.cache_generation = 0;
        std::mem::take(&mut self.revision)
    }
}

pub(super) enum Decision {
    Create,
    Unchanged,
    Update { expected_revision: u64 },
}

/// Create, update (at the revision read) or leave alone.
pub(super) fn decide<T: Stored>(
    desired: &T,
    current: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<Decision> {
    match current {
        Ok(current) => {
            let mut current = current.into_inner();
            let expected_revision = current.strip();
            if current == *desired {
                Ok(Decision::Unchanged)
            } else {
                Ok(Decision::Update { expected_revision })
            }
        }
        Err(status) if status.code() == Code::NotFound => Ok(Decision::Create),
        Err(status) => Err(explain(status)),
    }
}

/// Whether an API that does not exist is an error or has no stages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MissingApi {
    /// NotFound, as the admin API answers it.
    Refused,
    /// No stages: for stale reads of APIs just listed, which may not have
    /// reached the node answering yet, or may be deleted since.
    Empty,
}

/// The stages of `api`: all pages, or the one `paging` asks for.
pub(super) async fn stages_of(
    admin: &mut Admin,
    api: &str,
    consistency: i32,
    paging: &PageArgs,
    missing: MissingApi,
) -> anyhow::Result<Vec<config::Stage>> {
    list_all(paging, |page| {
        let (mut admin, api) = (admin.clone(), api.to_owned());
        async move {
            let listed = admin
                .list_stages(ListStagesRequest {
                    api,
                    page: Some(page),
                    consistency,
                })
                .await;
            match listed {
                Ok(list) => {
                    let list = list.into_inner();
                    Ok((list.stages, list.next_page_token))
                }
                Err(status) if status.code() == Code::NotFound && missing == MissingApi::Empty => {
                    Ok((Vec::new(), String::new()))
                }
                Err(status) => Err(status),
            }
        }
    })
    .await
}
