# guestprep-script: restore-network
# guestprep-output: text
# First-boot task (SYSTEM, written with lib.ps1 in front): re-applies the captured network
# configuration (capture-network.ps1) to the NIC that now carries the same MAC (NetKVM on
# Proxmox), then removes the ghost of the old adapter and its own task.
# - The first boot often runs before PnP has installed NetKVM: poll, bounded by the capture's
#   restore.wait_seconds, every restore.poll_seconds; each step is logged to
#   C:\ProgramData\guestprep\restore-network.log, the outcome to network-restore.json.
# - On the old hardware (the captured adapter, same GUID, is still there): nothing to do.
# - An adapter not found in time, or a step that failed: the task stays and runs at the next boot.
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$TaskName = 'guestprep-restore-network'

function Write-RestoreLog {
    param([string]$Message)
    Write-GuestprepLog -Name 'restore-network' -Message $Message
}

function Format-WmiMac {
    # Win32_NetworkAdapter.MACAddress is AA:BB:CC:DD:EE:FF; only hex digits reach the WQL filter
    param([string]$Mac)
    $hex = ($Mac.ToUpperInvariant() -replace '[^0-9A-F]', '')
    if ($hex.Length -ne 12) { throw ('not a MAC address: ' + $Mac) }
    return (($hex -split '(..)' | Where-Object -FilterScript { $_ }) -join ':')
}

function ConvertTo-SubnetMask {
    param([int]$Prefix)
    $octets = @()
    for ($i = 0; $i -lt 4; $i++) {
        $bits = [Math]::Max(0, [Math]::Min(8, $Prefix - 8 * $i))
        $octets += [string](256 - [Math]::Pow(2, 8 - $bits))
    }
    return ($octets -join '.')
}

function Find-CapturedAdapter {
    # 'old': the captured adapter itself is still here (VMware); $null: not (yet) present;
    # else the new adapter, once PnP and the network class installer gave it a connection.
    param($Captured)
    $mac = Format-WmiMac -Mac ([string]$Captured.mac)
    foreach ($n in @(Get-CimInstance -ClassName Win32_NetworkAdapter -Filter ("MACAddress = '" + $mac + "'"))) {
        if ([string]$n.GUID -eq [string]$Captured.guid) { return 'old' }
        if (-not $n.NetConnectionID) { continue }
        return $n
    }
    return $null
}

$GuestprepSetupApi = @'
using System;
using System.Runtime.InteropServices;
public static class GuestprepSetupApi {
    [StructLayout(LayoutKind.Sequential)]
    public struct SP_DEVINFO_DATA { public int cbSize; public Guid ClassGuid; public int DevInst; public IntPtr Reserved; }
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern IntPtr SetupDiCreateDeviceInfoList(IntPtr classGuid, IntPtr hwndParent);
    [DllImport("setupapi.dll", SetLastError = true, CharSet = CharSet.Unicode)]
    static extern bool SetupDiOpenDeviceInfo(IntPtr set, string instanceId, IntPtr hwndParent, int flags, ref SP_DEVINFO_DATA data);
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern bool SetupDiCallClassInstaller(int installFunction, IntPtr set, ref SP_DEVINFO_DATA data);
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern bool SetupDiDestroyDeviceInfoList(IntPtr set);
    // 0 or the Win32 error. DIF_REMOVE (5) through the class installer, as Device Manager's
    // "Uninstall device" does; works on a non-present (phantom) device.
    public static int Remove(string instanceId) {
        IntPtr set = SetupDiCreateDeviceInfoList(IntPtr.Zero, IntPtr.Zero);
        if (set == new IntPtr(-1)) { return Marshal.GetLastWin32Error(); }
        try {
            SP_DEVINFO_DATA d = new SP_DEVINFO_DATA();
            d.cbSize = Marshal.SizeOf(d);
            if (!SetupDiOpenDeviceInfo(set, instanceId, IntPtr.Zero, 0, ref d)) { return Marshal.GetLastWin32Error(); }
            if (!SetupDiCallClassInstaller(5, set, ref d)) { return Marshal.GetLastWin32Error(); }
            return 0;
        } finally { SetupDiDestroyDeviceInfoList(set); }
    }
}
'@

function Remove-GhostDevice {
    # The old vmxnet3 stays as a non-present ("ghost") device holding its old TCP/IP settings.
    # Win32_PnPEntity lists phantoms with ConfigManagerErrorCode 45 ("this hardware device is not
    # connected", Win32_PnPEntity docs); a present device is never removed.
    # pnputil /remove-device exists from Windows 10 2004 / Server 2022 (build 19041,
    # https://learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax);
    # before that (2012 R2, 2016, 2019) SetupDiCallClassInstaller(DIF_REMOVE)
    # (https://learn.microsoft.com/windows-hardware/drivers/install/basic-installation-operations,
    # SetupDiRemoveDevice is its default handler). No devcon: it is not shipped with Windows.
    param([string]$InstanceId)
    if (-not $InstanceId) { return 'no instance id captured: ghost kept' }
    $wql = $InstanceId.Replace('\', '\\').Replace("'", "\'")
    $ent = @(Get-CimInstance -ClassName Win32_PnPEntity -Filter ("DeviceID = '" + $wql + "'"))
    if ($ent.Count -eq 0) { return 'already gone' }
    if ([int]$ent[0].ConfigManagerErrorCode -ne 45) { return 'still present: kept' }
    $build = [int](Get-CimInstance -ClassName Win32_OperatingSystem).BuildNumber
    if ($build -ge 19041) {
        $r = Invoke-Native -FilePath 'pnputil.exe' -ArgumentList @('/remove-device', $InstanceId)
        if ($r.ExitCode -eq 0) { return 'removed (pnputil /remove-device)' }
        Write-RestoreLog -Message ('pnputil /remove-device ' + $InstanceId + ' exited ' + $r.ExitCode + ': ' + ($r.StdOut + $r.StdErr).Trim() + '; trying SetupAPI')
    }
    if (-not ('GuestprepSetupApi' -as [type])) { Add-Type -TypeDefinition $GuestprepSetupApi }
    $err = [GuestprepSetupApi]::Remove($InstanceId)
    if ($err -ne 0) { throw ('SetupDiCallClassInstaller(DIF_REMOVE) ' + $InstanceId + ' failed: Win32 error ' + $err) }
    return 'removed (SetupAPI DIF_REMOVE)'
}

function Invoke-Wmi {
    # Win32_NetworkAdapterConfiguration methods answer 0 (done) or 1 (done, reboot needed)
    param($Config, [string]$Method, [hashtable]$Arguments)
    $r = Invoke-CimMethod -InputObject $Config -MethodName $Method -Arguments $Arguments
    if ([int]$r.ReturnValue -gt 1) { throw ($Method + ' returned ' + $r.ReturnValue) }
}

# NetTCPIP/DnsClient cmdlets: Windows Server 2012 / Windows 8 and newer; netsh/WMI otherwise
$HaveNetIP = [bool](Get-Command -Name 'New-NetIPAddress' -ErrorAction SilentlyContinue) -and [bool](Get-Command -Name 'Get-NetIPAddress' -ErrorAction SilentlyContinue)
$HaveNetRoute = [bool](Get-Command -Name 'New-NetRoute' -ErrorAction SilentlyContinue) -and [bool](Get-Command -Name 'Get-NetRoute' -ErrorAction SilentlyContinue)
$HaveDnsClient = [bool](Get-Command -Name 'Set-DnsClientServerAddress' -ErrorAction SilentlyContinue)

function Restore-Adapter {
    param($Captured, $Nic, $Capture)
    $idx = [int]$Nic.InterfaceIndex
    $cfg = Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter ('Index = ' + [int]$Nic.Index)
    $done = @()
    $ipv4 = @($Captured.ipv4)
    $gw4 = @($Captured.gateways | Where-Object -FilterScript { -not ([string]$_.address).Contains(':') })
    $gw6 = @($Captured.gateways | Where-Object -FilterScript { ([string]$_.address).Contains(':') })
    if (-not $Captured.dhcp -and $ipv4.Count -gt 0) {
        Invoke-Wmi -Config $cfg -Method 'EnableStatic' -Arguments @{ IPAddress = [string[]]@($ipv4 | ForEach-Object -Process { [string]$_.address }); SubnetMask = [string[]]@($ipv4 | ForEach-Object -Process { ConvertTo-SubnetMask -Prefix ([int]$_.prefix) }) }
        $done += 'ipv4'
        if ($gw4.Count -gt 0) {
            $args4 = @{ DefaultIPGateway = [string[]]@($gw4 | ForEach-Object -Process { [string]$_.address }) }
            if (@($gw4 | Where-Object -FilterScript { $null -eq $_.metric }).Count -eq 0) { $args4['GatewayCostMetric'] = [uint16[]]@($gw4 | ForEach-Object -Process { [int]$_.metric }) }
            Invoke-Wmi -Config $cfg -Method 'SetGateways' -Arguments $args4
            $done += 'gateways'
        }
    }
    foreach ($a in @($Captured.ipv6)) {
        if ($HaveNetIP) {
            if (-not (Get-NetIPAddress -InterfaceIndex $idx -IPAddress ([string]$a.address) -ErrorAction SilentlyContinue)) {
                $null = New-NetIPAddress -InterfaceIndex $idx -IPAddress ([string]$a.address) -PrefixLength ([int]$a.prefix)
            }
        } else {
            $r = Invoke-Native -FilePath 'netsh.exe' -ArgumentList @('interface', 'ipv6', 'add', 'address', ('interface=' + $idx), ('address=' + [string]$a.address + '/' + [int]$a.prefix), 'store=persistent')
            if ($r.ExitCode -ne 0) { throw ('netsh ipv6 add address exited ' + $r.ExitCode + ': ' + ($r.StdOut + $r.StdErr).Trim()) }
        }
        $done += ('ipv6 ' + [string]$a.address)
    }
    foreach ($g in $gw6) {
        if ($HaveNetRoute) {
            if (-not (Get-NetRoute -InterfaceIndex $idx -DestinationPrefix '::/0' -NextHop ([string]$g.address) -ErrorAction SilentlyContinue)) {
                $null = New-NetRoute -InterfaceIndex $idx -DestinationPrefix '::/0' -NextHop ([string]$g.address) -RouteMetric ([int]$g.metric)
            }
        } else {
            $r = Invoke-Native -FilePath 'netsh.exe' -ArgumentList @('interface', 'ipv6', 'add', 'route', '::/0', ('interface=' + $idx), ('nexthop=' + [string]$g.address), 'store=persistent')
            if ($r.ExitCode -ne 0) { throw ('netsh ipv6 add route exited ' + $r.ExitCode + ': ' + ($r.StdOut + $r.StdErr).Trim()) }
        }
        $done += ('ipv6 gateway ' + [string]$g.address)
    }
    $dns = @($Captured.dns)
    if ($dns.Count -gt 0) {
        # also on a DHCP adapter: static DNS servers with a DHCP address
        if ($HaveDnsClient) {
            Set-DnsClientServerAddress -InterfaceIndex $idx -ServerAddresses ([string[]]$dns)
        } else {
            Invoke-Wmi -Config $cfg -Method 'SetDNSServerSearchOrder' -Arguments @{ DNSServerSearchOrder = [string[]]@($dns | Where-Object -FilterScript { -not ([string]$_).Contains(':') }) }
        }
        $done += 'dns servers'
    }
    if ([string]$Captured.dns_suffix) {
        Invoke-Wmi -Config $cfg -Method 'SetDNSDomain' -Arguments @{ DNSDomain = [string]$Captured.dns_suffix }
        $done += ('dns suffix ' + [string]$Captured.dns_suffix)
    }
    Invoke-Wmi -Config $cfg -Method 'SetDynamicDNSRegistration' -Arguments @{ FullDNSRegistrationEnabled = [bool]$Captured.register_dns; DomainDNSRegistrationEnabled = [bool]$Captured.register_suffix }
    foreach ($rt in @($Capture.routes | Where-Object -FilterScript { (Format-WmiMac -Mac ([string]$_.mac)) -eq (Format-WmiMac -Mac ([string]$Captured.mac)) })) {
        if ($HaveNetRoute) {
            if (-not (Get-NetRoute -InterfaceIndex $idx -DestinationPrefix ([string]$rt.destination) -NextHop ([string]$rt.next_hop) -ErrorAction SilentlyContinue)) {
                $null = New-NetRoute -InterfaceIndex $idx -DestinationPrefix ([string]$rt.destination) -NextHop ([string]$rt.next_hop) -RouteMetric ([int]$rt.metric)
            }
            $done += ('route ' + [string]$rt.destination)
        }
    }
    return $done
}

$capturePath = Join-Path -Path $GuestprepDir -ChildPath 'network-capture.json'
$capture = Read-JsonFile -Path $capturePath
if ($null -eq $capture) { Write-RestoreLog -Message ('no ' + $capturePath + ': nothing to restore'); exit 0 }
$wait = 600
$poll = 5
if ($capture.PSObject.Properties['restore'] -and $null -ne $capture.restore) { $wait = [int]$capture.restore.wait_seconds; $poll = [Math]::Max(1, [int]$capture.restore.poll_seconds) }
$adapters = @($capture.adapters)
Write-RestoreLog -Message ('start: ' + $adapters.Count + ' captured adapter(s), waiting up to ' + $wait + ' s for them')

# Bounded wait for every captured MAC (PnP may still be installing NetKVM at this point).
$found = @{}
$deadline = (Get-Date).AddSeconds($wait)
$attempt = 0
while ($true) {
    $attempt++
    foreach ($a in $adapters) {
        if ($found.ContainsKey([string]$a.mac)) { continue }
        $n = Find-CapturedAdapter -Captured $a
        if ($n -is [string]) {
            Write-RestoreLog -Message ('the captured adapter ' + [string]$a.mac + ' is still present (old hardware): nothing to do')
            exit 0
        }
        if ($null -ne $n) {
            $found[[string]$a.mac] = $n
            Write-RestoreLog -Message ('found ' + [string]$a.mac + ' as "' + [string]$n.NetConnectionID + '" (' + [string]$n.Description + ') after ' + $attempt + ' poll(s)')
        }
    }
    if ($found.Count -eq $adapters.Count -or (Get-Date) -ge $deadline) { break }
    Start-Sleep -Seconds $poll
}

$results = @()
$failed = 0
foreach ($a in $adapters) {
    $mac = [string]$a.mac
    if (-not $found.ContainsKey($mac)) {
        $failed++
        Write-RestoreLog -Message ('adapter ' + $mac + ' did not appear within ' + $wait + ' s: the task stays for the next boot')
        $results += [ordered]@{ mac = $mac; status = 'not_found' }
        continue
    }
    $entry = [ordered]@{ mac = $mac; status = 'restored'; adapter = [string]$found[$mac].NetConnectionID; ghost = $null; applied = @() }
    try {
        # ghost first: its stale settings are what makes Windows warn the address is "already assigned"
        $entry.ghost = Remove-GhostDevice -InstanceId ([string]$a.pnp_instance_id)
        Write-RestoreLog -Message ('ghost ' + [string]$a.pnp_instance_id + ': ' + $entry.ghost)
    } catch {
        $entry.ghost = 'failed: ' + $_.Exception.Message
        Write-RestoreLog -Message ('ghost ' + [string]$a.pnp_instance_id + ' not removed: ' + $_.Exception.Message)
    }
    try {
        $entry.applied = @(Restore-Adapter -Captured $a -Nic $found[$mac] -Capture $capture)
        Write-RestoreLog -Message ('applied to ' + $mac + ': ' + ($entry.applied -join ', '))
    } catch {
        $failed++
        $entry.status = 'failed'
        $entry['error'] = $_.Exception.Message
        Write-RestoreLog -Message ('restoring ' + $mac + ' failed: ' + $_.Exception.Message)
    }
    $results += $entry
}
$wanted = @($capture.dns_search_list)
if ($wanted.Count -gt 0) {
    $have = [string](Get-RegistryValueOrNull -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters' -Name 'SearchList')
    if ($have -ne ($wanted -join ',')) {
        try {
            $r = Invoke-CimMethod -ClassName Win32_NetworkAdapterConfiguration -MethodName SetDNSSuffixSearchOrder -Arguments @{ DNSDomainSuffixSearchOrder = [string[]]$wanted }
            Write-RestoreLog -Message ('dns suffix search list set (' + ($wanted -join ',') + '): ' + $r.ReturnValue)
        } catch { $failed++; Write-RestoreLog -Message ('dns suffix search list not set: ' + $_.Exception.Message) }
    }
}
Write-JsonFile -Path (Join-Path -Path $GuestprepDir -ChildPath 'network-restore.json') -Value ([ordered]@{ schema = 'guestprep.windows.network-restore/1'; time = (Get-Date).ToUniversalTime().ToString('o'); adapters = $results; failed = $failed })
if ($failed -eq 0) {
    $null = Remove-GuestprepTask -Name $TaskName
    Write-RestoreLog -Message 'done, task removed'
}
