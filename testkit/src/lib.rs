//! gpumesh-testkit: test doubles that stand in for a volunteer's machine.
//!
//! Why a crate of its own: an operator's `gpumesh agent` and `gpumesh gateway` should carry
//! no fake services, and the agent must not know whether the service beside it is real. Demos,
//! load-test fleets and integration tests run [`MockService`] *next to* a real agent, exactly
//! where a real inference server would sit: the agent health-checks its URL and the mock posts
//! its load to the agent's load endpoint, the same contract a real service follows. (The same
//! split as linkerd's `…/mock` and `app/test` crates.)
//!
//! Layout:
//! - [`mock`]: the mock GPU inference service ([`MockService`], [`MockServiceConfig`],
//!   [`Fault`]) and its checkable answers ([`answer_for`], [`embedding_for`]).
//! - [`error`]: [`MockError`], why a mock service could not start or restart.

pub mod error;
pub mod mock;

pub use error::MockError;
pub use mock::{
    EMBEDDING_DIM, Fault, MockService, MockServiceConfig, MockState, answer_for, embedding_for,
};
