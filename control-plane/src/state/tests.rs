//! State machine tests: semantics of each command, and determinism under any
//! sequence of commands.

use super::*;
use proptest::prelude::*;
use pylon_proto::config::v1::{
    ApiStageRef, BasePathMapping, CanarySettings, Integration, MockResponse, Resource, Route, integration,
};
use pylon_proto::raft::v1::{BatchOp, ResourceRef, Restore};

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn command(op: Op) -> Command {
    Command {
        request_id: "test".into(),
        at: at(1_700_000_000),
        op: Some(op),
        actor: Some(pylon_proto::raft::v1::Actor {
            name: "ci".into(),
            roles: vec!["operator".into()],
        }),
        method: "Test".into(),
        ..Default::default()
    }
}

/// `command` sent with an idempotency key by `caller`; the digest stands for
/// the request the admin API would hash (here: the operation).
fn keyed(mut command: Command, caller: &str, key: &str) -> Command {
    use sha2::Digest as _;
    command.idempotency_key = key.into();
    if let Some(actor) = command.actor.as_mut() {
        actor.name = caller.into();
    }
    let op = Command {
        op: command.op.clone(),
        ..Default::default()
    };
    command.request_digest = sha2::Sha256::digest(prost::Message::encode_to_vec(&op)).to_vec();
    command
}

/// The state without its history (audit log, remembered outcomes).
fn resources(state: &State) -> StateImage {
    StateImage {
        audit: Vec::new(),
        remembered: Vec::new(),
        ..state.to_image()
    }
}

fn api(name: &str, body: &str) -> Api {
    Api {
        name: name.into(),
        protocol: 1,
        routes: vec![Route {
            method: "GET".into(),
            path: "/pets".into(),
            integration: Some(Integration {
                r#type: integration::Type::Mock as i32,
                timeout_ms: 29_000,
                mock: Some(MockResponse {
                    status_code: 200,
                    body: body.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn put(kind: Kind, create: bool, expected_revision: u64) -> Command {
    command(Op::Put(Put {
        resource: Some(Resource { kind: Some(kind) }),
        create,
        expected_revision,
    }))
}

fn deploy(api: &str, id: &str, stage: &str) -> Command {
    command(Op::CreateDeployment(CreateDeployment {
        api: api.into(),
        id: id.into(),
        description: String::new(),
        stage: stage.into(),
    }))
}

fn delete(kind: resource_ref::Kind, api: &str, name: &str) -> Command {
    command(Op::Delete(Delete {
        target: Some(ResourceRef {
            kind: kind as i32,
            api: api.into(),
            name: name.into(),
        }),
        expected_revision: 0,
    }))
}

fn code(result: Result<Applied, CommandError>) -> ErrorCode {
    match result {
        Ok(applied) => panic!("expected an error, got {applied:?}"),
        Err(e) => e.code,
    }
}

#[test]
fn only_commands_that_can_change_what_data_planes_serve_trigger_a_publish() {
    let stage = Stage {
        api: "pets".into(),
        name: "prod".into(),
        ..Default::default()
    };
    let table = [
        (put(Kind::Api(api("pets", "[]")), true, 0), false),
        (put(Kind::Stage(stage), true, 0), true),
        (deploy("pets", "d1", ""), false),
        (deploy("pets", "d1", "prod"), true),
        (delete(resource_ref::Kind::Deployment, "pets", "d1"), false),
        (delete(resource_ref::Kind::Api, "", "pets"), true),
        (delete(resource_ref::Kind::Stage, "pets", "prod"), true),
    ];
    for (command, expected) in table {
        assert_eq!(changes_served_config(&command), expected, "{:?}", command.op);
    }
}

#[test]
fn creating_an_api_stamps_revision_and_time_and_bumps_the_config_version() {
    let mut state = State::default();
    state
        .apply(5, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("created");
    let stored = state.api("pets").expect("stored");
    assert_eq!(stored.revision, 5);
    assert_eq!(stored.created_at, at(1_700_000_000));
    assert_eq!(state.config_version(), 5);
    assert_eq!(
        code(state.apply(6, &put(Kind::Api(api("pets", "v1")), true, 0))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(state.config_version(), 5, "a failed command changes nothing");
}

#[test]
fn an_update_naming_a_stale_revision_fails_and_changes_nothing() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("created");
    state
        .apply(2, &put(Kind::Api(api("pets", "v2")), false, 1))
        .expect("updated at revision 1");
    let before = resources(&state);
    let stale = state.apply(3, &put(Kind::Api(api("pets", "v3")), false, 1));
    assert_eq!(code(stale), ErrorCode::Conflict);
    assert_eq!(resources(&state), before);
    assert_eq!(
        code(state.apply(3, &put(Kind::Api(api("cats", "v1")), false, 0))),
        ErrorCode::NotFound
    );
    state
        .apply(4, &put(Kind::Api(api("pets", "v4")), false, 0))
        .expect("revision 0 means any");
    assert_eq!(state.api("pets").map(|a| a.revision), Some(4));
}

#[test]
fn deployments_copy_the_definition_and_are_listed_newest_first() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("api");
    state.apply(2, &deploy("pets", "d1", "prod")).expect("d1");
    state
        .apply(3, &put(Kind::Api(api("pets", "v2")), false, 0))
        .expect("api v2");
    state.apply(4, &deploy("pets", "d2", "")).expect("d2");
    let history: Vec<&str> = state
        .deployments_of("pets")
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(history, ["d2", "d1"]);
    let body = |id: &str| {
        state
            .deployment("pets", id)
            .and_then(|d| d.definition.as_ref())
            .map(|a| {
                a.routes[0]
                    .integration
                    .as_ref()
                    .and_then(|i| i.mock.as_ref())
                    .map(|m| m.body.clone())
            })
    };
    assert_eq!(
        body("d1"),
        Some(Some("v1".into())),
        "d1 keeps the definition it was made from"
    );
    assert_eq!(body("d2"), Some(Some("v2".into())));
    assert_eq!(
        state.stage("pets", "prod").map(|s| s.deployment_id.as_str()),
        Some("d1")
    );
    assert_eq!(
        code(state.apply(5, &deploy("pets", "d2", ""))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(state.apply(5, &deploy("cats", "d9", ""))),
        ErrorCode::NotFound
    );
}

fn with_canary(state: &mut State) {
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("api");
    state.apply(2, &deploy("pets", "d1", "prod")).expect("d1");
    state.apply(3, &deploy("pets", "d2", "")).expect("d2");
    let mut stage = state.stage("pets", "prod").cloned().expect("prod");
    stage.variables.insert("backend".into(), "old".into());
    stage.canary = Some(CanarySettings {
        deployment_id: "d2".into(),
        percent_traffic: 10.0,
        stage_variable_overrides: [("backend".to_owned(), "new".to_owned())].into(),
        ..Default::default()
    });
    state
        .apply(4, &put(Kind::Stage(stage), false, 2))
        .expect("canary set");
}

#[test]
fn promoting_a_canary_moves_the_stage_copies_overrides_and_zeroes_traffic() {
    let mut state = State::default();
    with_canary(&mut state);
    let promote = command(Op::PromoteCanary(PromoteCanary {
        api: "pets".into(),
        stage: "prod".into(),
        expected_revision: 4,
    }));
    state.apply(5, &promote).expect("promoted");
    let stage = state.stage("pets", "prod").expect("prod");
    assert_eq!(stage.deployment_id, "d2");
    assert_eq!(stage.variables.get("backend").map(String::as_str), Some("new"));
    assert_eq!(stage.canary.as_ref().map(|c| c.percent_traffic), Some(0.0));
    assert_eq!(stage.revision, 5);
}

#[test]
fn a_cache_flush_moves_the_generation_and_updates_keep_it() {
    let mut state = State::default();
    with_canary(&mut state);
    let flush = command(Op::FlushStageCache(FlushStageCache {
        api: "pets".into(),
        stage: "prod".into(),
    }));
    state.apply(5, &flush).expect("flushed");
    let stage = state.stage("pets", "prod").cloned().expect("prod");
    assert_eq!((stage.cache_generation, stage.revision), (5, 5));
    // An update that does not know the generation keeps it.
    let update = pylon_proto::config::v1::Stage {
        cache_generation: 0,
        description: "edited".into(),
        ..stage
    };
    state
        .apply(6, &put(Kind::Stage(update), false, 5))
        .expect("updated");
    assert_eq!(state.stage("pets", "prod").map(|s| s.cache_generation), Some(5));
    let missing = command(Op::FlushStageCache(FlushStageCache {
        api: "pets".into(),
        stage: "nope".into(),
    }));
    assert_eq!(code(state.apply(7, &missing)), ErrorCode::NotFound);
}

#[test]
fn promoting_without_a_canary_is_a_failed_precondition() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("api");
    state.apply(2, &deploy("pets", "d1", "prod")).expect("d1");
    let promote = command(Op::PromoteCanary(PromoteCanary {
        api: "pets".into(),
        stage: "prod".into(),
        expected_revision: 0,
    }));
    assert_eq!(code(state.apply(3, &promote)), ErrorCode::FailedPrecondition);
}

#[test]
fn rollback_points_the_stage_at_any_earlier_deployment_of_its_api() {
    let mut state = State::default();
    with_canary(&mut state);
    state.apply(5, &deploy("pets", "d3", "prod")).expect("d3 on prod");
    let rollback = |id: &str, expected| {
        command(Op::RollbackStage(RollbackStage {
            api: "pets".into(),
            stage: "prod".into(),
            deployment_id: id.into(),
            expected_revision: expected,
        }))
    };
    assert_eq!(code(state.apply(6, &rollback("d1", 4))), ErrorCode::Conflict);
    assert_eq!(code(state.apply(6, &rollback("nope", 0))), ErrorCode::NotFound);
    state.apply(6, &rollback("d1", 5)).expect("rolled back");
    assert_eq!(
        state.stage("pets", "prod").map(|s| s.deployment_id.as_str()),
        Some("d1")
    );
}

#[test]
fn stages_must_point_at_deployments_of_their_own_api() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("api");
    let stage = Stage {
        api: "pets".into(),
        name: "dev".into(),
        deployment_id: "ghost".into(),
        ..Default::default()
    };
    assert_eq!(
        code(state.apply(2, &put(Kind::Stage(stage), true, 0))),
        ErrorCode::FailedPrecondition
    );
    let orphan = Stage {
        api: "cats".into(),
        name: "dev".into(),
        ..Default::default()
    };
    assert_eq!(
        code(state.apply(2, &put(Kind::Stage(orphan), true, 0))),
        ErrorCode::NotFound
    );
}

#[test]
fn referenced_resources_cannot_be_deleted_and_api_deletion_cascades() {
    let mut state = State::default();
    with_canary(&mut state);
    assert_eq!(
        code(state.apply(5, &delete(resource_ref::Kind::Deployment, "pets", "d2"))),
        ErrorCode::FailedPrecondition,
        "d2 is the canary's"
    );
    let key = ApiKey {
        id: "k1".into(),
        name: "k".into(),
        key_hash: "h1".into(),
        enabled: true,
        ..Default::default()
    };
    state.apply(5, &put(Kind::ApiKey(key), true, 0)).expect("key");
    let plan = UsagePlan {
        name: "gold".into(),
        api_stages: vec![ApiStageRef {
            api: "pets".into(),
            stage: "prod".into(),
            ..Default::default()
        }],
        api_key_ids: vec!["k1".into()],
        ..Default::default()
    };
    state
        .apply(6, &put(Kind::UsagePlan(plan), true, 0))
        .expect("plan");
    let domain = DomainName {
        name: "api.example.com".into(),
        mappings: vec![BasePathMapping {
            base_path: String::new(),
            api: "pets".into(),
            stage: "prod".into(),
        }],
        ..Default::default()
    };
    state
        .apply(7, &put(Kind::DomainName(domain), true, 0))
        .expect("domain");
    assert_eq!(
        code(state.apply(8, &delete(resource_ref::Kind::Api, "", "pets"))),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        code(state.apply(8, &delete(resource_ref::Kind::Stage, "pets", "prod"))),
        ErrorCode::FailedPrecondition
    );

    state
        .apply(8, &delete(resource_ref::Kind::ApiKey, "", "k1"))
        .expect("key deleted");
    assert_eq!(
        state.usage_plan("gold").map(|p| p.api_key_ids.len()),
        Some(0),
        "key detached from its plan"
    );
    state
        .apply(9, &delete(resource_ref::Kind::UsagePlan, "", "gold"))
        .expect("plan deleted");
    state
        .apply(10, &delete(resource_ref::Kind::DomainName, "", "api.example.com"))
        .expect("domain deleted");
    state
        .apply(11, &delete(resource_ref::Kind::Api, "", "pets"))
        .expect("api deleted");
    assert!(state.stage("pets", "prod").is_none());
    assert!(state.deployments_of("pets").is_empty());
}

#[test]
fn api_key_hashes_are_fixed_at_creation_and_unique() {
    let mut state = State::default();
    let key = ApiKey {
        id: "k1".into(),
        name: "k".into(),
        key_hash: "h1".into(),
        ..Default::default()
    };
    state
        .apply(1, &put(Kind::ApiKey(key.clone()), true, 0))
        .expect("key");
    let twin = ApiKey {
        id: "k2".into(),
        ..key.clone()
    };
    assert_eq!(
        code(state.apply(2, &put(Kind::ApiKey(twin), true, 0))),
        ErrorCode::AlreadyExists
    );
    let renamed = ApiKey {
        name: "renamed".into(),
        key_hash: "other".into(),
        ..key
    };
    state
        .apply(2, &put(Kind::ApiKey(renamed), false, 1))
        .expect("updated");
    let stored = state.api_key("k1").expect("k1");
    assert_eq!(
        (stored.name.as_str(), stored.key_hash.as_str()),
        ("renamed", "h1")
    );
}

// ---- property tests ----

fn arb_command() -> impl Strategy<Value = Command> {
    let key = prop::option::of(prop::sample::select(vec!["k1", "k2", "k3"]));
    (key, arb_op()).prop_map(|(key, command)| match key {
        Some(key) => keyed(command, "ci", key),
        None => command,
    })
}

fn arb_op() -> impl Strategy<Value = Command> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    let stage = prop::sample::select(vec!["prod", "dev"]);
    let id = prop::sample::select(vec!["d1", "d2", "d3"]);
    let body = prop::sample::select(vec!["x", "y"]);
    prop_oneof![
        (name.clone(), body, any::<bool>(), 0u64..6).prop_map(|(n, b, create, rev)| put(
            Kind::Api(api(n, b)),
            create,
            rev
        )),
        (name.clone(), id.clone(), prop::option::of(stage.clone())).prop_map(|(n, i, s)| deploy(
            n,
            i,
            s.unwrap_or("")
        )),
        (
            name.clone(),
            stage.clone(),
            id.clone(),
            prop::option::of((id.clone(), 0.0..=100.0f64)),
            any::<bool>()
        )
            .prop_map(|(n, s, d, canary, create)| {
                let stage = Stage {
                    api: n.into(),
                    name: s.into(),
                    deployment_id: d.into(),
                    canary: canary.map(|(c, percent)| CanarySettings {
                        deployment_id: c.into(),
                        percent_traffic: percent,
                        stage_variable_overrides: [("v".to_owned(), c.to_owned())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                put(Kind::Stage(stage), create, 0)
            }),
        (name.clone(), stage.clone()).prop_map(|(n, s)| command(Op::PromoteCanary(PromoteCanary {
            api: n.into(),
            stage: s.into(),
            expected_revision: 0,
        }))),
        (name.clone(), stage.clone(), id.clone()).prop_map(|(n, s, d)| command(Op::RollbackStage(
            RollbackStage {
                api: n.into(),
                stage: s.into(),
                deployment_id: d.into(),
                expected_revision: 0,
            }
        ))),
        (name.clone(), stage.clone()).prop_map(|(n, s)| delete(resource_ref::Kind::Stage, n, s)),
        (name.clone(), id).prop_map(|(n, d)| delete(resource_ref::Kind::Deployment, n, d)),
        name.prop_map(|n| delete(resource_ref::Kind::Api, "", n)),
    ]
}

fn run(commands: &[Command]) -> (State, Vec<Result<Applied, CommandError>>) {
    let mut state = State::default();
    let results = commands
        .iter()
        .enumerate()
        .map(|(i, c)| state.apply(i as u64 + 1, c))
        .collect();
    (state, results)
}

proptest! {
    #[test]
    fn any_sequence_of_commands_applied_twice_from_scratch_gives_identical_state(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let (first, first_results) = run(&commands);
        let (second, second_results) = run(&commands);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(first_results, second_results);
        prop_assert_eq!(
            prost::Message::encode_to_vec(&first.to_image()),
            prost::Message::encode_to_vec(&second.to_image())
        );
    }

    #[test]
    fn a_snapshot_image_restores_exactly_the_same_state(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let (state, _) = run(&commands);
        let bytes = prost::Message::encode_to_vec(&state.to_image());
        let image: StateImage = prost::Message::decode(bytes.as_slice()).expect("decodes");
        prop_assert_eq!(State::from_image(image), state);
    }

    #[test]
    fn check_refuses_exactly_what_apply_refuses(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let mut state = State::default();
        for (i, command) in commands.iter().enumerate() {
            let index = i as u64 + 1;
            let checked = state.check(index, command);
            let applied = state.apply(index, command).map(drop);
            prop_assert_eq!(checked, applied);
        }
    }

    #[test]
    fn a_failed_command_never_changes_a_resource_or_the_version(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let mut state = State::default();
        for (i, command) in commands.iter().enumerate() {
            let before = resources(&state);
            if state.apply(i as u64 + 1, command).is_err() {
                prop_assert_eq!(resources(&state), before);
            }
        }
    }

    #[test]
    fn a_keyed_command_sent_again_answers_its_first_outcome_and_changes_nothing(
        commands in prop::collection::vec(arb_op(), 1..40)
    ) {
        let mut state = State::default();
        let mut index = 0;
        for (i, command) in commands.iter().enumerate() {
            let command = keyed(command.clone(), "ci", &format!("key-{i}"));
            index += 1;
            let first = state.apply(index, &command);
            let before = state.clone();
            index += 1;
            prop_assert_eq!(state.apply(index, &command), first);
            prop_assert_eq!(&state, &before);
        }
    }

    #[test]
    fn every_stage_always_points_at_existing_deployments_of_its_api(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let (state, _) = run(&commands);
        for stage in state.stages.values() {
            if !stage.deployment_id.is_empty() {
                prop_assert!(state.deployment(&stage.api, &stage.deployment_id).is_some());
            }
            if let Some(canary) = &stage.canary {
                prop_assert!(state.deployment(&stage.api, &canary.deployment_id).is_some());
            }
            prop_assert!(state.api(&stage.api).is_some());
        }
    }
}

// ---- history: audit log and idempotency ----

#[test]
fn every_command_in_the_log_is_audited_with_who_what_and_its_outcome() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("created");
    let refused = state.apply(2, &put(Kind::Api(api("pets", "v1")), true, 0));
    assert_eq!(code(refused), ErrorCode::AlreadyExists);
    let records: Vec<_> = state.history().audit_before(0).collect();
    assert_eq!(records.len(), 2);
    let (newest, oldest) = (records[0], records[1]);
    assert_eq!((oldest.index, oldest.error_code.as_str()), (1, ""));
    assert_eq!(oldest.actor.as_ref().map(|a| a.name.as_str()), Some("ci"));
    assert_eq!(oldest.resource.as_ref().map(|r| r.name.as_str()), Some("pets"));
    assert_eq!(newest.error_code, "AlreadyExists");
    assert_eq!(
        state.history().audit_before(2).count(),
        1,
        "paging goes to older records"
    );
}

#[test]
fn the_audit_log_keeps_the_newest_records_only() {
    let mut state = State::default();
    let total = history::MAX_AUDIT_RECORDS as u64 + 5;
    for index in 1..=total {
        let _ = state.apply(index, &delete(resource_ref::Kind::Api, "", "missing"));
    }
    assert_eq!(state.history().audit_len(), history::MAX_AUDIT_RECORDS);
    assert_eq!(
        state.history().audit_before(0).next().map(|r| r.index),
        Some(total)
    );
    assert_eq!(state.history().audit_before(0).last().map(|r| r.index), Some(6));
}

#[test]
fn a_retried_create_answers_the_created_api_instead_of_already_exists() {
    let mut state = State::default();
    let create = keyed(put(Kind::Api(api("pets", "v1")), true, 0), "ci", "retry-me");
    let first = state.apply(1, &create).expect("created");
    assert_eq!(state.apply(2, &create), Ok(first));
    assert_eq!(state.config_version(), 1, "the retry changed nothing");
    assert_eq!(
        state.check(3, &create),
        Ok(()),
        "the admin API's dry run lets it through"
    );
    let delete_twice = keyed(delete(resource_ref::Kind::Api, "", "pets"), "ci", "gone");
    assert_eq!(state.apply(4, &delete_twice), Ok(Applied::Deleted));
    assert_eq!(
        state.apply(5, &delete_twice),
        Ok(Applied::Deleted),
        "not NotFound"
    );
}

#[test]
fn a_key_reused_for_another_request_is_refused_and_keys_are_per_caller() {
    let mut state = State::default();
    state
        .apply(1, &keyed(put(Kind::Api(api("pets", "v1")), true, 0), "ci", "k"))
        .expect("created");
    let other = keyed(put(Kind::Api(api("cats", "v1")), true, 0), "ci", "k");
    assert_eq!(code(state.apply(2, &other)), ErrorCode::InvalidArgument);
    assert!(state.api("cats").is_none());
    let someone_else = keyed(put(Kind::Api(api("cats", "v1")), true, 0), "ops", "k");
    assert!(
        state.apply(3, &someone_else).is_ok(),
        "another caller's key k is its own"
    );
}

#[test]
fn a_refusal_is_remembered_too() {
    let mut state = State::default();
    let update = keyed(put(Kind::Api(api("pets", "v1")), false, 0), "ci", "u");
    assert_eq!(code(state.apply(1, &update)), ErrorCode::NotFound);
    state
        .apply(2, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("created");
    assert_eq!(
        code(state.apply(3, &update)),
        ErrorCode::NotFound,
        "the first outcome, not a new one"
    );
}

#[test]
fn remembered_outcomes_are_bounded_oldest_first() {
    let mut state = State::default();
    let total = history::MAX_REMEMBERED as u64 + 3;
    for index in 1..=total {
        let command = keyed(
            delete(resource_ref::Kind::Api, "", "missing"),
            "ci",
            &format!("k{index}"),
        );
        let _ = state.apply(index, &command);
    }
    assert_eq!(state.history().remembered_len(), history::MAX_REMEMBERED);
    let image = state.to_image();
    assert_eq!(image.remembered.first().map(|r| r.index), Some(4));
    assert_eq!(State::from_image(image), state);
}

#[test]
fn the_cluster_is_named_once() {
    use pylon_proto::raft::v1::SetClusterId;
    let mut state = State::default();
    let name = |id: &str| {
        command(Op::SetClusterId(SetClusterId {
            cluster_id: id.into(),
        }))
    };
    state.apply(1, &name("first")).expect("named");
    assert_eq!(
        code(state.apply(2, &name("second"))),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(state.cluster_id(), "first");
    assert_eq!(State::from_image(state.to_image()).cluster_id(), "first");
}

/// A batch of the single commands' operations.
fn batch(commands: Vec<Command>) -> Command {
    let ops = commands
        .into_iter()
        .map(|c| BatchOp {
            op: match c.op {
                Some(Op::Put(put)) => Some(batch_op::Op::Put(put)),
                Some(Op::Delete(delete)) => Some(batch_op::Op::Delete(delete)),
                other => panic!("not in a batch: {other:?}"),
            },
        })
        .collect();
    command(Op::Batch(Batch { ops }))
}

#[test]
fn a_batch_applies_in_order_so_later_changes_see_earlier_ones() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("old", "v1")), true, 0))
        .expect("old");
    let plan = UsagePlan {
        name: "gold".into(),
        api_stages: vec![ApiStageRef {
            api: "pets".into(),
            stage: "prod".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let stage = Stage {
        api: "pets".into(),
        name: "prod".into(),
        ..Default::default()
    };
    let applied = state
        .apply(
            7,
            &batch(vec![
                put(Kind::Api(api("pets", "v1")), true, 0),
                put(Kind::Stage(stage), true, 0),
                put(Kind::UsagePlan(plan), true, 0),
                delete(resource_ref::Kind::Api, "", "old"),
            ]),
        )
        .expect("applied");
    let Applied::Batch(each) = applied else {
        panic!("a batch answer: {applied:?}");
    };
    assert_eq!(each.len(), 4);
    assert!(matches!(each[3], Applied::Deleted));
    assert_eq!(state.usage_plan("gold").map(|p| p.revision), Some(7));
    assert!(state.api("old").is_none());
    assert_eq!(state.config_version(), 7);
}

#[test]
fn a_batch_with_one_refused_change_changes_nothing_and_names_the_change() {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("pets");
    let before = resources(&state);
    let refused = state
        .apply(
            2,
            &batch(vec![
                put(Kind::Api(api("cats", "v1")), true, 0),
                // Stale revision: the batch must not half-apply.
                put(Kind::Api(api("pets", "v2")), false, 99),
            ]),
        )
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::Conflict);
    assert!(refused.message.starts_with("changes[1]: "), "{}", refused.message);
    assert_eq!(resources(&state).apis, before.apis);
    assert!(state.api("cats").is_none());
    // The refusal is audited like any other command.
    assert_eq!(state.history().audit_len(), 2);
}

#[test]
fn a_batch_retried_with_its_key_answers_the_first_outcome() {
    let mut state = State::default();
    let first = keyed(
        batch(vec![put(Kind::Api(api("pets", "v1")), true, 0)]),
        "ci",
        "k1",
    );
    let applied = state.apply(3, &first).expect("applied");
    let again = state.apply(4, &first).expect("replayed");
    assert_eq!(applied, again);
    assert_eq!(state.api("pets").map(|a| a.revision), Some(3));
}

// ---- restore ----

fn restore(resources: Restore, replace: bool) -> Command {
    command(Op::Restore(Restore { replace, ..resources }))
}

/// A state with an API, two deployments, a stage on the second, a key and
/// a plan offering the stage to the key.
fn populated() -> State {
    let mut state = State::default();
    state
        .apply(1, &put(Kind::Api(api("pets", "v1")), true, 0))
        .expect("api");
    state.apply(2, &deploy("pets", "d1", "prod")).expect("d1");
    state
        .apply(3, &put(Kind::Api(api("pets", "v2")), false, 0))
        .expect("api v2");
    state.apply(4, &deploy("pets", "d2", "prod")).expect("d2");
    let key = ApiKey {
        id: "k1".into(),
        name: "client".into(),
        key_hash: "a".repeat(64),
        ..Default::default()
    };
    state.apply(5, &put(Kind::ApiKey(key), true, 0)).expect("key");
    let plan = UsagePlan {
        name: "gold".into(),
        api_stages: vec![ApiStageRef {
            api: "pets".into(),
            stage: "prod".into(),
            ..Default::default()
        }],
        api_key_ids: vec!["k1".into()],
        ..Default::default()
    };
    state
        .apply(6, &put(Kind::UsagePlan(plan), true, 0))
        .expect("plan");
    state
}

#[test]
fn a_restore_into_an_empty_state_brings_back_every_resource_and_the_deployment_history() {
    let source = populated();
    let mut target = State::default();
    target
        .apply(
            1,
            &command(Op::SetClusterId(SetClusterId {
                cluster_id: "b".repeat(32),
            })),
        )
        .expect("named");
    let applied = target
        .apply(9, &restore(source.to_restore(), false))
        .expect("restored");
    assert_eq!(applied, Applied::Restored { config_version: 9 });
    assert_eq!(target.config_version(), 9, "the version moves forward");
    assert_eq!(
        target.cluster_id(),
        "b".repeat(32),
        "the cluster keeps its own id"
    );
    // Deployments are kept as they were (but for the revision, the
    // restore's), and the history reads in the same order.
    let history = |state: &State| {
        state
            .deployments_of("pets")
            .into_iter()
            .map(|d| (d.id.clone(), d.definition.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(history(&target), history(&source));
    assert!(target.deployments_of("pets").iter().all(|d| d.revision == 9));
    let stage = target.stage("pets", "prod").expect("stage");
    assert_eq!(stage.deployment_id, "d2");
    // A new generation no earlier stage of any cluster had: the restore's
    // time in nanoseconds (the command's, so every node agrees).
    assert_eq!(stage.cache_generation, 1_700_000_000_000_000_000);
    assert_eq!(
        target.api("pets").expect("api").routes,
        source.api("pets").expect("api").routes
    );
    assert_eq!(target.api_key("k1").expect("key").key_hash, "a".repeat(64));
    assert_eq!(
        target.usage_plan("gold").expect("plan").api_key_ids,
        vec!["k1".to_owned()]
    );
    let record = target.history().audit_before(0).next().expect("audited");
    assert!(
        record
            .resource
            .as_ref()
            .is_some_and(|r| r.name.contains("at version 6"))
    );
}

#[test]
fn a_restore_over_resources_needs_replace_and_then_removes_what_the_backup_lacks() {
    let mut state = populated();
    state
        .apply(7, &put(Kind::Api(api("extra", "x")), true, 0))
        .expect("extra");
    let backup = populated().to_restore();
    let before = state.clone();
    assert_eq!(
        code(state.apply(8, &restore(backup.clone(), false))),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(resources(&state), resources(&before), "a refusal changes nothing");
    state.apply(9, &restore(backup, true)).expect("replaced");
    assert!(state.api("extra").is_none());
    assert!(state.api("pets").is_some());
}

#[test]
fn a_backup_whose_references_do_not_hold_is_refused_whole_naming_the_item() {
    let mut backup = populated().to_restore();
    backup.deployments.retain(|d| d.id != "d2");
    let mut state = State::default();
    let refused = state.apply(1, &restore(backup, false)).expect_err("refused");
    assert!(refused.message.starts_with("stages[0]:"), "{}", refused.message);
    assert_eq!(resources(&state), resources(&State::default()));

    let mut twins = populated().to_restore();
    let mut twin = twins.api_keys[0].clone();
    twin.id = "k2".into();
    twins.api_keys.push(twin);
    let refused = state.apply(2, &restore(twins, false)).expect_err("refused");
    assert!(refused.message.starts_with("api_keys[1]:"), "{}", refused.message);
}

proptest! {
    #[test]
    fn restoring_any_state_gives_back_its_resources(
        commands in prop::collection::vec(arb_command(), 0..60)
    ) {
        let (source, _) = run(&commands);
        let mut target = State::default();
        target.apply(1000, &restore(source.to_restore(), false)).expect("restored");
        // The history of every API reads in the same order.
        let history = |state: &State, api: &str| {
            state.deployments_of(api).into_iter().map(|d| d.id.clone()).collect::<Vec<_>>()
        };
        for api in ["a", "b", "c"] {
            prop_assert_eq!(history(&target, api), history(&source, api));
        }
        let mut again = target.to_restore();
        let mut original = source.to_restore();
        // Only revisions, update times and cache generations are the restore's own.
        for restore in [&mut again, &mut original] {
            restore.from_config_version = 0;
            for a in &mut restore.apis { a.revision = 0; a.updated_at = None; }
            for s in &mut restore.stages { s.revision = 0; s.updated_at = None; s.cache_generation = 0; }
            for k in &mut restore.api_keys { k.revision = 0; k.updated_at = None; }
            for p in &mut restore.usage_plans { p.revision = 0; p.updated_at = None; }
            for d in &mut restore.domain_names { d.revision = 0; d.updated_at = None; }
            for d in &mut restore.deployments { d.revision = 0; d.created_at = None; }
        }
        prop_assert_eq!(again, original);
    }
}

#[test]
fn a_restore_brings_back_portal_consumers_owning_only_keys_it_holds() {
    let mut source = populated();
    let consumer = pylon_proto::raft::v1::Consumer {
        email: "dev@example.com".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        status: pylon_proto::raft::v1::consumer::Status::Approved as i32,
        api_key_ids: vec!["k1".into()],
        ..Default::default()
    };
    source
        .consumers
        .insert(consumer.email.clone(), Arc::new(consumer));
    let mut target = State::default();
    target
        .apply(1, &restore(source.to_restore(), false))
        .expect("restored");
    assert_eq!(
        target.consumer("dev@example.com").map(|c| c.api_key_ids.clone()),
        Some(vec!["k1".to_owned()])
    );
    let mut dangling = source.to_restore();
    dangling.api_keys.clear();
    dangling
        .usage_plans
        .iter_mut()
        .for_each(|p| p.api_key_ids.clear());
    let refused = State::default()
        .apply(1, &restore(dangling, false))
        .expect_err("a consumer naming a key the backup lacks");
    assert!(
        refused.message.starts_with("consumers[0]:"),
        "{}",
        refused.message
    );
}
