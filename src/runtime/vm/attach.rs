//! Attaching to a detached VM that another runtime booted (`vm.json` in the box).

use super::supervise::supervise_attached;
use super::*;
use crate::runtime::network::BoundForward;

/// What a detached VM's box keeps (`vm.json`) so that a later runtime can attach to it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    pub spec: VmSpec,
    pub shim_pid: u32,
    pub vmm_pid: u32,
    pub boot_id: String,
    /// The port forwards as bound at boot.
    #[serde(default)]
    pub forwards: Vec<BoundForward>,
}
impl Vm {
    /// Reconnects to a detached VM that another runtime booted: checks that its shim still
    /// runs, follows it through a pidfd, and pings its agent, which must answer with the
    /// boot id recorded at boot (the socket could otherwise lead to another VM).
    pub async fn attach(info: AttachInfo) -> Result<Vm> {
        if !shim_running(info.shim_pid) {
            return Err(Error::NotFound { what: format!("the shim (pid {}) of the detached VM", info.shim_pid) });
        }
        let (exit, kill) = supervise_attached(info.shim_pid, info.spec.clone())?;
        let endpoint = info.spec.host_to_guest(AGENT_VSOCK_PORT);
        let agent = AgentClient::connect(&endpoint, RPC_TIMEOUT).await.map_err(|cause| Error::Agent { rpc: "connect", cause })?;
        let first_ping = agent.ping(RPC_TIMEOUT).await.map_err(|cause| Error::Agent { rpc: "Ping", cause })?;
        if first_ping.boot_id != info.boot_id {
            return Err(Error::InvalidState {
                what: format!("the VM behind {}", endpoint.socket.display()),
                reason: "it answered with another boot id: it is not the VM this box started".into(),
            });
        }
        let spec = Arc::new(info.spec);
        let lifeline = Arc::new(Lifeline { kill: kill.clone(), detached: true, _watchdog: None });
        let link = Link { agent, exit: exit.clone(), spec: spec.clone(), _lifeline: lifeline };
        Ok(Vm {
            spec,
            shim_pid: info.shim_pid,
            vmm_pid: info.vmm_pid,
            helper_pids: Vec::new(),
            forwards: info.forwards,
            link,
            first_ping,
            timings: BootTimings { vm_running: Duration::ZERO, first_ping: Duration::ZERO, guest_steps: Vec::new() },
            exec_counters: Arc::default(),
            exit,
            kill,
        })
    }

    /// What a later runtime needs to attach to this VM.
    pub fn attach_info(&self) -> AttachInfo {
        AttachInfo {
            spec: (*self.spec).clone(),
            shim_pid: self.shim_pid,
            vmm_pid: self.vmm_pid,
            boot_id: self.first_ping.boot_id.clone(),
            forwards: self.forwards.clone(),
        }
    }
}
