//! The interface that holds the node-local addresses (NodeLocal DNSCache's `nodelocaldns`):
//! a dummy link, so the addresses are local to the node and answered here. A kernel built
//! without the dummy driver gets them on `lo` instead, which delivers locally the same way.
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{packet_route::address::AddressAttribute, Handle, LinkDummy, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("interface {0} not found after creating it")]
    Missing(String),
}

/// Where the addresses went, for [`LocalIface::remove`].
#[derive(Debug)]
pub struct LocalIface {
    /// The interface holding the addresses (`lo` without a dummy driver).
    pub iface: String,
    /// Whether it is our dummy (deleted on exit) rather than `lo` (only our addresses go).
    owned: bool,
    addrs: Vec<IpAddr>,
}

fn handle() -> Result<Handle, Error> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, Error> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

/// Puts `addrs` on the dummy interface `name` (created and brought up if missing).
pub async fn ensure(name: &str, addrs: &[IpAddr]) -> Result<LocalIface, Error> {
    let h = handle()?;
    let mut iface = name.to_owned();
    let index = match index_of(&h, name).await? {
        Some(i) => i,
        None => match h.link().add(LinkDummy::new(name).build()).execute().await {
            Ok(()) => index_of(&h, name)
                .await?
                .ok_or_else(|| Error::Missing(name.to_owned()))?,
            Err(e) if errno(&e) == libc::EOPNOTSUPP => {
                tracing::warn!(
                    iface = name,
                    "this kernel has no dummy interface driver: the addresses go on lo"
                );
                iface = "lo".into();
                index_of(&h, "lo")
                    .await?
                    .ok_or_else(|| Error::Missing("lo".into()))?
            }
            Err(e) => return Err(e.into()),
        },
    };
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    for a in addrs {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        match h.address().add(index, *a, prefix).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(LocalIface {
        owned: iface == name,
        iface,
        addrs: addrs.to_vec(),
    })
}

impl LocalIface {
    /// Undoes [`ensure`]: deletes our dummy (whichever daemon created it: the name is ours),
    /// or takes our addresses off `lo`.
    pub async fn remove(self) -> Result<(), Error> {
        let h = handle()?;
        let Some(index) = index_of(&h, &self.iface).await? else {
            return Ok(());
        };
        if self.owned {
            h.link().del(index).execute().await?;
            return Ok(());
        }
        let mut list = h.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = list.try_next().await? {
            let ours = msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Address(ip) if self.addrs.contains(ip)));
            if ours {
                h.address().del(msg).execute().await?;
            }
        }
        Ok(())
    }
}
