//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

use super::operations::paginate;
use super::*;

impl LocalKms {
    pub(super) fn do_create_alias(&self, req: CreateAliasRequest) -> KmsResult<()> {
        self.run(Op::CreateAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate(Op::CreateAlias.name(), info, |s, info| {
                self.check_alias_quota(s)?;
                let row = self.alias_row(self.caller_account(), &req.alias_name);
                if s.aliases.contains_key(&row) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!(
                            "An alias with the name {} already exists",
                            self.alias_arn(&req.alias_name)
                        ),
                    ));
                }
                let id = self
                    .authorized(s, &req.target_key_id, Op::CreateAlias.action(), None, info)?
                    .id
                    .clone();
                s.aliases.insert(
                    row,
                    AliasRecord {
                        target: id,
                        created: now(),
                        creator: Some(self.caller.principal.clone()),
                    },
                );
                Ok(())
            })
        })
    }

    pub(super) fn do_update_alias(&self, req: UpdateAliasRequest) -> KmsResult<()> {
        self.run(Op::UpdateAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate(Op::UpdateAlias.name(), info, |s, info| {
                let current = self.alias_target(s, &req.alias_name)?;
                // Like AWS: the caller needs kms:UpdateAlias on the key the alias points
                // at now *and* on the new one, or anyone allowed on their own key could
                // repoint another principal's alias at it.
                if s.keys.contains_key(&current) {
                    self.authorized(s, &current, Op::UpdateAlias.action(), None, info)?;
                }
                let id = self
                    .authorized(s, &req.target_key_id, Op::UpdateAlias.action(), None, info)?
                    .id
                    .clone();
                let row = self.alias_row(self.caller_account(), &req.alias_name);
                if let Some(a) = s.aliases.get_mut(&row) {
                    a.target = id;
                }
                Ok(())
            })
        })
    }

    pub(super) fn do_delete_alias(&self, req: DeleteAliasRequest) -> KmsResult<()> {
        self.run(Op::DeleteAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            self.mutate(Op::DeleteAlias.name(), info, |s, info| {
                let target = self.alias_target(s, &req.alias_name)?;
                if s.keys.contains_key(&target) {
                    self.authorized(s, &target, Op::DeleteAlias.action(), None, info)?;
                }
                s.aliases
                    .remove(&self.alias_row(self.caller_account(), &req.alias_name));
                Ok(())
            })
        })
    }

    pub(super) fn do_list_aliases(
        &self,
        req: ListAliasesRequest,
    ) -> KmsResult<ListAliasesResponse> {
        self.run(Op::ListAliases.name(), |_| {
            let s = self.snapshot()?;
            let filter = match &req.key_id {
                Some(k) => Some(self.resolve(&s, k)?),
                None => None,
            };
            let at = now();
            let all: Vec<AliasListEntry> = s
                .aliases
                .iter()
                .filter(|(row, _)| self.alias_of_row(row).0 == self.caller_account())
                .filter(|(_, a)| filter.as_ref().is_none_or(|f| *f == a.target))
                .filter(|_| self.foreign_region().is_none())
                .filter(|(_, a)| {
                    s.keys
                        .get(&a.target)
                        .is_some_and(|k| !Store::is_destroyed(k, at))
                })
                .map(|(row, a)| AliasListEntry {
                    alias_name: self.alias_of_row(row).1.to_string(),
                    alias_arn: self.alias_arn(self.alias_of_row(row).1),
                    target_key_id: a.target.clone(),
                    creation_date: a.created,
                })
                .collect();
            let (aliases, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }
}
