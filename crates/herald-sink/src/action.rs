//! What the sink answers: fixed actions, per-path scripts and callbacks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use herald_http::Request;

use crate::model::{LatencyModel, Rng, StatusMix};
use crate::SinkError;

/// Longest delay an [`Action::Delay`] may ask for: 60 s. A receiver that should never
/// answer is better modelled by [`Action::Close`] or a client-side timeout than by a
/// connection parked for minutes.
pub const DELAY_MS_MAX: u64 = 60_000;

/// Most actions in one path script: scripts describe short stories ("fail twice, then
/// succeed"), not load patterns.
pub const SCRIPT_ACTIONS_MAX: usize = 1024;

/// Most scripted paths: each holds a cursor that every connection consults.
pub const SCRIPTED_PATHS_MAX: usize = 1024;

/// What the sink does with one complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status (200..=599) and an empty body.
    Status(u16),
    /// Answer with `status` and `Retry-After: <seconds>`.
    RetryAfter {
        /// Status to answer, usually 429 or 503.
        status: u16,
        /// Value of the `Retry-After` header, in seconds.
        seconds: u64,
    },
    /// Wait `delay_ms` (at most [`DELAY_MS_MAX`]), then do `then`.
    Delay {
        /// How long to wait before acting.
        delay_ms: u64,
        /// What to do after waiting.
        then: Box<Action>,
    },
    /// Close the connection without answering (the request was still counted and
    /// recorded: it arrived).
    Close,
}

impl Action {
    /// `200 OK`.
    pub fn ok() -> Action {
        Action::Status(200)
    }

    /// Waits `delay_ms`, then does `then`.
    pub fn delay(delay_ms: u64, then: Action) -> Action {
        Action::Delay {
            delay_ms,
            then: Box::new(then),
        }
    }

    /// The status this action finally answers with; `None` for [`Action::Close`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Action::Status(status) | Action::RetryAfter { status, .. } => Some(*status),
            Action::Delay { then, .. } => then.status(),
            Action::Close => None,
        }
    }

    /// Checks the status range and the delay cap.
    pub fn check(&self) -> Result<(), SinkError> {
        match self {
            Action::Status(status) | Action::RetryAfter { status, .. } => {
                if (200..=599).contains(status) {
                    Ok(())
                } else {
                    Err(SinkError::Config(format!(
                        "status {status} is outside 200..=599 (a sink answers with final responses only)"
                    )))
                }
            }
            Action::Delay { delay_ms, then } => {
                if *delay_ms > DELAY_MS_MAX {
                    return Err(SinkError::Config(format!(
                        "delay_ms = {delay_ms} exceeds DELAY_MS_MAX = {DELAY_MS_MAX}"
                    )));
                }
                then.check()
            }
            Action::Close => Ok(()),
        }
    }
}

/// Chooses the action for a request, given the request. Called on the event-loop
/// thread that serves the connection, outside any sink lock, and it must return quickly:
/// while it runs, no other connection of that thread is served. To answer slowly,
/// return [`Action::delay`] (the connection waits on a deadline, not the thread); to
/// wait for something outside the sink, choose from state the callback reads without
/// blocking. A callback that panics or returns an invalid action gets its request
/// answered 500.
pub type Responder = Arc<dyn Fn(&Request) -> Action + Send + Sync>;

/// A sequence of actions for one path: request `n` gets `actions[n]`, and the last one
/// repeats forever.
#[derive(Debug)]
struct PathScript {
    actions: Vec<Action>,
    next: usize,
}

impl PathScript {
    fn take(&mut self) -> Action {
        let index = self.next.min(self.actions.len() - 1);
        self.next = self.next.saturating_add(1);
        self.actions[index].clone()
    }
}

/// How requests that no script or responder handles are answered: a model of the
/// receiver, drawn per request from one seeded generator. The n-th such request gets
/// the n-th draw, so the answers to N requests are the same multiset in every run with
/// the same seed (and the same sequence on one connection).
#[derive(Debug)]
struct Model {
    mix: Option<StatusMix>,
    latency: Option<LatencyModel>,
    retry_after_s: Option<u64>,
    rng: Rng,
}

/// The sink's current behaviour, changed at run time through the [`crate::Sink`] handle.
pub(crate) struct Behaviour {
    default: Action,
    paths: HashMap<String, PathScript>,
    responder: Option<Responder>,
    model: Model,
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour")
            .field("default", &self.default)
            .field("paths", &self.paths)
            .field("responder", &self.responder.is_some())
            .field("model", &self.model)
            .finish()
    }
}

/// What a connection does with a request: run a callback (outside the lock) or act.
pub(crate) enum Choice {
    Act(Action),
    Ask(Responder),
}

impl Behaviour {
    pub(crate) fn new(default: Action) -> Behaviour {
        Behaviour {
            default,
            paths: HashMap::new(),
            responder: None,
            model: Model {
                mix: None,
                latency: None,
                retry_after_s: None,
                rng: Rng::new(0),
            },
        }
    }

    /// Restarts the generator of the modelled answers.
    pub(crate) fn set_seed(&mut self, seed: u64) {
        self.model.rng = Rng::new(seed);
    }

    pub(crate) fn set_status_mix(&mut self, mix: Option<StatusMix>) {
        self.model.mix = mix;
    }

    pub(crate) fn set_latency(&mut self, latency: Option<LatencyModel>) {
        self.model.latency = latency;
    }

    pub(crate) fn set_retry_after_s(&mut self, seconds: Option<u64>) {
        self.model.retry_after_s = seconds;
    }

    pub(crate) fn set_default(&mut self, action: Action) -> Result<(), SinkError> {
        action.check()?;
        self.default = action;
        Ok(())
    }

    pub(crate) fn set_script(&mut self, path: &str, actions: Vec<Action>) -> Result<(), SinkError> {
        if actions.is_empty() || actions.len() > SCRIPT_ACTIONS_MAX {
            return Err(SinkError::Config(format!(
                "a path script needs 1..={SCRIPT_ACTIONS_MAX} actions, got {}",
                actions.len()
            )));
        }
        for action in &actions {
            action.check()?;
        }
        if !self.paths.contains_key(path) && self.paths.len() >= SCRIPTED_PATHS_MAX {
            return Err(SinkError::Config(format!(
                "more than SCRIPTED_PATHS_MAX = {SCRIPTED_PATHS_MAX} scripted paths"
            )));
        }
        self.paths
            .insert(path.to_owned(), PathScript { actions, next: 0 });
        Ok(())
    }

    pub(crate) fn clear_script(&mut self, path: &str) {
        self.paths.remove(path);
    }

    pub(crate) fn set_responder(&mut self, responder: Option<Responder>) {
        self.responder = responder;
    }

    /// The callback wins over scripts, scripts over the default (shaped by the model).
    pub(crate) fn choose(&mut self, path: &str) -> Choice {
        if let Some(responder) = &self.responder {
            return Choice::Ask(responder.clone());
        }
        match self.paths.get_mut(path) {
            Some(script) => Choice::Act(script.take()),
            None => Choice::Act(self.modelled()),
        }
    }

    /// The default action, with the status drawn from the mix (when set), `Retry-After`
    /// on 429 and 503 (when set) and a delay drawn from the latency model (when set).
    fn modelled(&mut self) -> Action {
        let model = &mut self.model;
        let mut action = match &model.mix {
            Some(mix) => Action::Status(mix.draw(&mut model.rng)),
            None => self.default.clone(),
        };
        if let Some(seconds) = model.retry_after_s {
            action = with_retry_after(action, seconds);
        }
        if let Some(latency) = &model.latency {
            let delay_ms = latency.sample_ms(&mut model.rng);
            if delay_ms > 0 {
                action = Action::delay(delay_ms, action);
            }
        }
        action
    }
}

/// `action` with `Retry-After: seconds` if it finally answers 429 or 503 without one.
fn with_retry_after(action: Action, seconds: u64) -> Action {
    match action {
        Action::Status(status @ (429 | 503)) => Action::RetryAfter { status, seconds },
        Action::Delay { delay_ms, then } => Action::Delay {
            delay_ms,
            then: Box::new(with_retry_after(*then, seconds)),
        },
        other => other,
    }
}

/// The path part of a request target (before `?`).
pub fn target_path(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(choice: Choice) -> Action {
        match choice {
            Choice::Act(action) => action,
            Choice::Ask(_) => panic!("expected an action"),
        }
    }

    #[test]
    fn script_runs_in_order_then_repeats_last() {
        let mut behaviour = Behaviour::new(Action::ok());
        behaviour
            .set_script(
                "/flaky",
                vec![Action::Status(500), Action::Status(503), Action::ok()],
            )
            .unwrap();
        let got: Vec<_> = (0..5).map(|_| act(behaviour.choose("/flaky"))).collect();
        assert_eq!(
            got,
            [
                Action::Status(500),
                Action::Status(503),
                Action::ok(),
                Action::ok(),
                Action::ok()
            ]
        );
        assert_eq!(act(behaviour.choose("/other")), Action::ok());
        behaviour.clear_script("/flaky");
        behaviour.set_default(Action::Status(410)).unwrap();
        assert_eq!(act(behaviour.choose("/flaky")), Action::Status(410));
    }

    #[test]
    fn checks_statuses_delays_and_script_sizes() {
        let cases: &[(Action, bool)] = &[
            (Action::Status(200), true),
            (Action::Status(599), true),
            (Action::Status(199), false),
            (Action::Status(600), false),
            (Action::Status(101), false),
            (
                Action::RetryAfter {
                    status: 429,
                    seconds: 1,
                },
                true,
            ),
            (
                Action::RetryAfter {
                    status: 42,
                    seconds: 1,
                },
                false,
            ),
            (Action::delay(DELAY_MS_MAX, Action::ok()), true),
            (Action::delay(DELAY_MS_MAX + 1, Action::ok()), false),
            (Action::delay(1, Action::Status(7)), false),
            (Action::Close, true),
        ];
        for (action, valid) in cases {
            assert_eq!(action.check().is_ok(), *valid, "{action:?}");
        }
        let mut behaviour = Behaviour::new(Action::ok());
        assert!(behaviour.set_script("/a", vec![]).is_err());
        assert!(behaviour
            .set_script("/a", vec![Action::ok(); SCRIPT_ACTIONS_MAX + 1])
            .is_err());
        assert!(behaviour
            .set_script("/a", vec![Action::ok(); SCRIPT_ACTIONS_MAX])
            .is_ok());
        for i in 1..SCRIPTED_PATHS_MAX {
            behaviour
                .set_script(&format!("/p{i}"), vec![Action::ok()])
                .unwrap();
        }
        assert!(behaviour
            .set_script("/one-too-many", vec![Action::ok()])
            .is_err());
        assert!(
            behaviour.set_script("/a", vec![Action::Close]).is_ok(),
            "replacing is fine"
        );
    }

    #[test]
    fn the_model_shapes_default_answers_only() {
        let mut behaviour = Behaviour::new(Action::ok());
        behaviour
            .set_script("/scripted", vec![Action::Status(500)])
            .unwrap();
        behaviour.set_status_mix(Some("429:1".parse().unwrap()));
        behaviour.set_retry_after_s(Some(7));
        behaviour.set_latency(Some(LatencyModel::fixed(30).unwrap()));
        assert_eq!(
            act(behaviour.choose("/anything")),
            Action::delay(
                30,
                Action::RetryAfter {
                    status: 429,
                    seconds: 7
                }
            )
        );
        assert_eq!(act(behaviour.choose("/scripted")), Action::Status(500));
        behaviour.set_status_mix(None);
        behaviour.set_latency(None);
        behaviour
            .set_default(Action::delay(5, Action::Status(503)))
            .unwrap();
        assert_eq!(
            act(behaviour.choose("/")),
            Action::delay(
                5,
                Action::RetryAfter {
                    status: 503,
                    seconds: 7
                }
            ),
            "Retry-After reaches through a delay"
        );
        behaviour.set_retry_after_s(None);
        assert_eq!(
            act(behaviour.choose("/")),
            Action::delay(5, Action::Status(503))
        );
        behaviour.set_default(Action::Status(500)).unwrap();
        behaviour.set_retry_after_s(Some(7));
        assert_eq!(
            act(behaviour.choose("/")),
            Action::Status(500),
            "not on a 500"
        );
    }

    #[test]
    fn a_seed_repeats_the_modelled_answers() {
        let draw = |seed: u64| {
            let mut behaviour = Behaviour::new(Action::ok());
            behaviour.set_status_mix(Some("200:90,500:10".parse().unwrap()));
            behaviour.set_latency(Some("5,p99=50".parse().unwrap()));
            behaviour.set_seed(seed);
            (0..200)
                .map(|_| act(behaviour.choose("/")))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }

    #[test]
    fn status_of_nested_actions() {
        assert_eq!(Action::delay(5, Action::Status(503)).status(), Some(503));
        assert_eq!(Action::delay(5, Action::Close).status(), None);
    }

    #[test]
    fn target_paths() {
        for (target, path) in [("/a?b=c", "/a"), ("/a", "/a"), ("/?x", "/"), ("*", "*")] {
            assert_eq!(target_path(target), path);
        }
    }
}
