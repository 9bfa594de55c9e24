//! Filter expressions: compiled by libpcap for each link type the capture
//! covers, translated to eBPF and run in the kernel in front of the capture
//! program (see `pcap_filter`'s contract for the filter program).

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};

use pcap_common::slot;
use pcap_filter::{
    CbpfInsn, CompileError, InterfaceFilter, TailCall, TranslateError, build_filter_program,
    sys::{self, LoadError, PROG_TYPE_SCHED_CLS},
};
use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use thiserror::Error;

use crate::iface::Interface;

/// The filter program's name, as `bpftool prog` prints it.
const FILTER_PROGRAM: &str = "pcap_filter";

#[derive(Debug, Error)]
pub enum FilterError {
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error("{0}")]
    Load(#[from] Box<LoadError>),
    #[error("cannot install the filter program: {0}")]
    Install(#[source] std::io::Error),
}

/// Why a filter expression was refused.
#[derive(Debug, Error)]
pub enum FilterCompileError {
    #[error("{}", pcap_proto::filter_too_long(*.0))]
    TooLong(usize),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// An expression compiled for every link type of a capture's interfaces.
#[derive(Clone, Debug)]
pub struct Filter {
    expression: String,
    /// One classic program per link type.
    programs: Vec<(u16, Vec<CbpfInsn>)>,
}

impl Filter {
    /// Compiles `expression` for the link types of `interfaces`. `None`
    /// when there is nothing to filter: the expression is empty or accepts
    /// every packet on every link type.
    ///
    /// Expressions longer than [`pcap_proto::MAX_FILTER_BYTES`] and names
    /// to resolve are refused (see [`pcap_filter::names`]).
    pub fn compile(
        expression: &str,
        interfaces: &[Interface],
    ) -> Result<Option<Self>, FilterCompileError> {
        Self::compile_for(expression, interfaces.iter().map(|i| i.link_type))
    }

    /// As [`Self::compile`], for every link type an interface of an
    /// `-i any` capture may have, now or when it appears.
    pub fn compile_any(expression: &str) -> Result<Option<Self>, FilterCompileError> {
        Self::compile_for(expression, [LINKTYPE_ETHERNET, LINKTYPE_RAW])
    }

    fn compile_for(
        expression: &str,
        link_types: impl IntoIterator<Item = u16>,
    ) -> Result<Option<Self>, FilterCompileError> {
        if expression.len() > pcap_proto::MAX_FILTER_BYTES {
            return Err(FilterCompileError::TooLong(expression.len()));
        }
        if expression.trim().is_empty() {
            return Ok(None);
        }
        let mut programs: Vec<(u16, Vec<CbpfInsn>)> = Vec::new();
        for link_type in link_types {
            if programs.iter().all(|(known, _)| *known != link_type) {
                programs.push((link_type, pcap_filter::compile(expression, link_type)?));
            }
        }
        if programs
            .iter()
            .all(|(_, program)| accepts_everything(program))
        {
            return Ok(None);
        }
        Ok(Some(Self {
            expression: expression.to_owned(),
            programs,
        }))
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Loads the filter program (both directions run it) and puts it into
    /// its `FILTERS` slot, replacing what it held. The program lives as
    /// long as the returned fd and the program array hold it. Only the
    /// link types of `interfaces` are dispatched to.
    pub(crate) fn install(
        &self,
        interfaces: &[Interface],
        filters_map: BorrowedFd<'_>,
    ) -> Result<OwnedFd, FilterError> {
        let ifindexes: Vec<(u16, Vec<u32>)> = self
            .programs
            .iter()
            .map(|(link_type, _)| {
                let indexes = interfaces
                    .iter()
                    .filter(|i| i.link_type == *link_type)
                    .map(|i| i.index);
                (*link_type, indexes.collect())
            })
            .collect();
        let per_link_type: Vec<InterfaceFilter<'_>> = self
            .programs
            .iter()
            .zip(&ifindexes)
            .filter(|(_, (_, ifindexes))| !ifindexes.is_empty())
            .map(|((link_type, program), (_, ifindexes))| InterfaceFilter {
                program,
                link_type: *link_type,
                ifindexes,
            })
            .collect();
        let tail_call = TailCall {
            prog_array_fd: filters_map.as_raw_fd(),
            index: slot::CAPTURE,
        };
        let insns = build_filter_program(&per_link_type, tail_call)?;
        let fd =
            sys::prog_load(PROG_TYPE_SCHED_CLS, &insns, "GPL", FILTER_PROGRAM).map_err(|e| {
                // The error's message has only the end of the log.
                tracing::debug!(
                    program = FILTER_PROGRAM,
                    log = e.log,
                    "the verifier's whole log"
                );
                Box::new(e)
            })?;
        sys::map_update(filters_map, slot::FILTER, fd.as_fd()).map_err(FilterError::Install)?;
        Ok(fd)
    }
}

/// `ret #k` with k > 0 as the first instruction: every packet matches.
pub fn accepts_everything(program: &[CbpfInsn]) -> bool {
    const RET_K: u16 = 0x06;
    program
        .first()
        .is_some_and(|insn| insn.code == RET_K && insn.k > 0)
}
