# guestprep-script: capture-network
# guestprep-output: json
# Captures, per MAC, what a new NIC would lose: IPv4 and IPv6 static addresses, gateways (with
# metrics), DNS servers set by hand (also on adapters that get their address from DHCP), the
# connection-specific DNS suffix, routes bound to the adapter, the global suffix search list,
# and the adapter's PnP instance id (to remove the ghost vmxnet3 later). Then installs a
# first-boot task that re-applies it to the NIC with the same MAC (restore-network.ps1).
# Windows Server 2012 / Windows 8 or newer (NetTCPIP/DnsClient modules; guarded anyway).
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.network_capture'
Initialize-GuestprepDir

function ConvertTo-PrefixLength {
    # 255.255.255.0 -> 24 (no -shr: counting bits keeps this PowerShell 2.0-parseable)
    param([string]$Mask)
    $n = 0
    foreach ($octet in $Mask.Split('.')) { $n += ([System.Convert]::ToString([int]$octet, 2).Replace('0', '')).Length }
    return $n
}

function Get-TcpipValue {
    # Values a user/GPO-less admin set by hand live under the interface's Tcpip key; the
    # Dhcp* twins (DhcpNameServer, DhcpDomain) are what DHCP handed out and are not captured.
    param([string]$Stack, [string]$Guid, [string]$Name)
    $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $Stack + '\Parameters\Interfaces\' + $Guid
    $v = Get-RegistryValueOrNull -Path $key -Name $Name
    if ($null -eq $v) { return '' }
    return ([string]$v).Trim()
}

$haveNetTcpip = [bool](Get-Command -Name 'Get-NetIPAddress' -ErrorAction SilentlyContinue) -and [bool](Get-Command -Name 'Get-NetRoute' -ErrorAction SilentlyContinue)
$adapters = @()
$routes = @()
foreach ($cfg in @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = True')) {
    if (-not $cfg.MACAddress) { continue }
    $nic = Get-CimInstance -ClassName Win32_NetworkAdapter -Filter ('Index = ' + [int]$cfg.Index)
    $guid = [string]$nic.GUID
    $ifIndex = [int]$cfg.InterfaceIndex
    $ipv4 = @()
    $ipv6 = @()
    $ips = @($cfg.IPAddress)
    $subnets = @($cfg.IPSubnet)
    for ($i = 0; $i -lt $ips.Count; $i++) {
        $ip = [string]$ips[$i]
        if ($ip.Contains(':')) { continue }
        if (-not $cfg.DHCPEnabled) { $ipv4 += [ordered]@{ address = $ip; prefix = (ConvertTo-PrefixLength -Mask ([string]$subnets[$i])) } }
    }
    $gateways = @()
    $gws = @($cfg.DefaultIPGateway | Where-Object -FilterScript { $_ })
    $metrics = @($cfg.GatewayCostMetric)
    if (-not $cfg.DHCPEnabled) {
        for ($i = 0; $i -lt $gws.Count; $i++) {
            if (([string]$gws[$i]).Contains(':')) { continue }
            $m = $null
            if ($i -lt $metrics.Count) { $m = [int]$metrics[$i] }
            $gateways += [ordered]@{ address = [string]$gws[$i]; metric = $m }
        }
    }
    if ($haveNetTcpip) {
        # only addresses typed in by hand (PrefixOrigin Manual): not SLAAC, temporary or link-local
        foreach ($a in @(Get-NetIPAddress -InterfaceIndex $ifIndex -AddressFamily IPv6 -ErrorAction SilentlyContinue | Where-Object -FilterScript { [string]$_.PrefixOrigin -eq 'Manual' })) {
            $ipv6 += [ordered]@{ address = [string]$a.IPAddress; prefix = [int]$a.PrefixLength }
        }
        # static IPv6 default routes (NetMgmt), not the ones router advertisements install
        foreach ($r in @(Get-NetRoute -InterfaceIndex $ifIndex -AddressFamily IPv6 -DestinationPrefix '::/0' -ErrorAction SilentlyContinue | Where-Object -FilterScript { [string]$_.Protocol -eq 'NetMgmt' })) {
            $gateways += [ordered]@{ address = [string]$r.NextHop; metric = [int]$r.RouteMetric }
        }
        # persistent routes bound to this interface die with it (default routes are the gateways above)
        foreach ($r in @(Get-NetRoute -InterfaceIndex $ifIndex -PolicyStore PersistentStore -ErrorAction SilentlyContinue)) {
            $dest = [string]$r.DestinationPrefix
            if ($dest -eq '0.0.0.0/0' -or $dest -eq '::/0') { continue }
            $routes += [ordered]@{ mac = [string]$cfg.MACAddress; destination = $dest; next_hop = [string]$r.NextHop; metric = [int]$r.RouteMetric }
        }
    }
    $dns = @()
    foreach ($stack in @('Tcpip', 'Tcpip6')) {
        foreach ($s in ((Get-TcpipValue -Stack $stack -Guid $guid -Name 'NameServer') -split '[,\s]+')) { if ($s) { $dns += $s } }
    }
    $suffix = Get-TcpipValue -Stack 'Tcpip' -Guid $guid -Name 'Domain'
    $static = (-not $cfg.DHCPEnabled) -or $ipv6.Count -gt 0 -or $dns.Count -gt 0 -or $suffix -ne ''
    if (-not $static) { continue }   # all from DHCP: the new NIC gets the same from DHCP
    $adapters += [ordered]@{
        mac = [string]$cfg.MACAddress; name = [string]$nic.NetConnectionID; guid = $guid
        pnp_instance_id = [string]$nic.PNPDeviceID; description = [string]$nic.Description
        dhcp = [bool]$cfg.DHCPEnabled; ipv4 = $ipv4; ipv6 = $ipv6; gateways = $gateways
        dns = $dns; dns_suffix = $suffix; register_dns = [bool]$cfg.FullDNSRegistrationEnabled
        register_suffix = [bool]$cfg.DomainDNSRegistrationEnabled
    }
}
# global: survives a NIC change, kept so the restore can check it and the record is complete
$searchList = @()
foreach ($s in ([string](Get-RegistryValueOrNull -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters' -Name 'SearchList')).Split(',')) { if ($s.Trim()) { $searchList += $s.Trim() } }
$persisted = @()
foreach ($rt in @(Get-CimInstance -ClassName Win32_IP4PersistedRouteTable)) {
    # route -p without an interface: stored globally, survives the NIC change (kept for the record)
    $persisted += [ordered]@{ destination = [string]$rt.Destination; mask = [string]$rt.Mask; next_hop = [string]$rt.NextHop; metric = [int]$rt.Metric1 }
}
$wait = 600
if ($p.PSObject.Properties['wait_seconds'] -and $p.wait_seconds) { $wait = [int]$p.wait_seconds }
$capture = [ordered]@{
    schema = 'guestprep.windows.network-capture/2'; hostname = $env:COMPUTERNAME; adapters = $adapters
    routes = $routes; persisted_routes = $persisted; dns_search_list = $searchList
    restore = [ordered]@{ wait_seconds = $wait; poll_seconds = 5 }
}
$path = Join-Path -Path $GuestprepDir -ChildPath 'network-capture.json'
if (-not (Test-Path -Path $path)) { Add-JournalEntry -Operation $op -Kind 'file_write' -Target $path -Detail @{ before = $null } }
Write-JsonFile -Path $path -Value $capture
$restore = Join-Path -Path $GuestprepDir -ChildPath 'restore-network.ps1'
[System.IO.File]::WriteAllText($restore, [string]$p.restore_script, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
$task = [string]$p.task
if (-not (Test-GuestprepTask -Name $task)) {
    Add-JournalEntry -Operation $op -Kind 'task_create' -Target $task -Detail @{ script = $restore }
    New-GuestprepStartupTask -Name $task -Script $restore
}
$macs = @($adapters | ForEach-Object -Process { ([string]$_.mac).ToLower().Replace('-', ':') })
Update-GuestprepState -Key 'network_capture' -Value ([ordered]@{ macs = $macs; task = $task })
Write-Result -Value ([ordered]@{ ok = $true; capture = $capture; steps = @([ordered]@{ file = $path }, [ordered]@{ task = $task }) })
