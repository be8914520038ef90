namespace ThpCore.Paging;

/// <summary>
/// PLACEHOLDER for the TLB model being written on another branch; only the member the mapper's
/// TlbFlush calls. Drop this file at merge time in favour of the real class.
/// </summary>
public sealed class Tlb
{
    /// <summary>INVLPG: invalidates the translations for the page containing <paramref name="address"/> (placeholder: does nothing).</summary>
    /// <param name="cpu">The processor state (current PCID).</param>
    /// <param name="address">Any linear address in the page to invalidate.</param>
    public void Invlpg(CpuState cpu, VirtualAddress address)
    {
    }
}
